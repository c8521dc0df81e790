"""Ruler's Meta Length Tokens (MLT), the TLG targets and the PM/FM scores, as data.

Word count: `agents.text.count_word_runs` (Ruler's `nltk.RegexpTokenizer(r"\\w+")`: maximal
runs of Unicode word characters; punctuation ignored, "don't" is 2, a CJK run is 1), not
LongWriter's `count_words`. Count *after* removing every MLT (`strip_mlt`, which also removes
`[MLT:>800]`, a form Ruler's own scorer misses).

Every interval excludes its lower bound and includes its upper: lo < n <= hi; ">800" is
(800, inf). An empty output (0 words) always fails.

- MLT windows (training-data buckets): `MLT_WINDOWS`, `mlt_for_count` (the MLT whose window
  holds a count, None when none does).
- Targets: `TLG_TARGETS` ("10".."700", ">800"), `LEVELS` (Level 0 {10,30,50,80}, Level 1
  {150,300,500}, Level 2 {700,>800}).
- `PM_INTERVALS` / `FM_INTERVALS` per target; `pm_hit(target, n)`, `fm_hit(target, n)`.
- `mlt_for(words)`: the MLT a requested length is generated with (the nearest MLT value;
  above 800 words, `>800`).
- `tlg_target(words)`: the TLG target a requested length is scored against, or None when
  it is none of the nine (801+ words map to ">800").
"""
from __future__ import annotations

import math
import re

INF = math.inf

TLG_TARGETS: tuple[str, ...] = ("10", "30", "50", "80", "150", "300", "500", "700", ">800")
MLT_VALUES: tuple[str, ...] = TLG_TARGETS

# (lo, hi]: a response is labelled with an MLT only when its \w+ count is in the window.
MLT_WINDOWS: dict[str, tuple[float, float]] = {
    "10": (5, 15),
    "30": (25, 35),
    "50": (45, 55),
    "80": (75, 85),
    "150": (135, 155),  # asymmetric in the reference
    "300": (295, 305),
    "500": (495, 505),
    "700": (695, 705),
    ">800": (800, INF),
}

PM_INTERVALS: dict[str, tuple[float, float]] = {
    "10": (0, 20),
    "30": (20, 40),
    "50": (40, 60),
    "80": (70, 90),
    "150": (130, 170),
    "300": (280, 320),
    "500": (450, 550),
    "700": (630, 770),
    ">800": (800, INF),
}

# A partition of (0, inf): 0/20/40/60/100/200/400/600/800/inf.
FM_INTERVALS: dict[str, tuple[float, float]] = {
    "10": (0, 20),
    "30": (20, 40),
    "50": (40, 60),
    "80": (60, 100),
    "150": (100, 200),
    "300": (200, 400),
    "500": (400, 600),
    "700": (600, 800),
    ">800": (800, INF),
}

LEVELS: dict[str, tuple[str, ...]] = {
    "Level:0": ("10", "30", "50", "80"),
    "Level:1": ("150", "300", "500"),
    "Level:2": ("700", ">800"),
}

MLT_PATTERN = re.compile(r"\[MLT:>?\d+\]")
_LEADING_MLT = re.compile(r"^\s*\[MLT:(>?)(\d+)\]")


def normalize_target(target: str | int) -> str:
    """"150", 150, "[MLT:150]", "> 800", "more than 800" -> the TLG target string. ValueError
    for anything that is not one of the nine."""
    text = str(target).strip()
    match = re.fullmatch(r"\[MLT:(>?\d+)\]", text)
    if match:
        text = match.group(1)
    text = re.sub(r"^more than\s*", ">", text, flags=re.I).replace(" ", "")
    if text not in TLG_TARGETS:
        raise ValueError(f"not a TLG target: {target!r} (one of {', '.join(TLG_TARGETS)})")
    return text


def level_of(target: str | int) -> str:
    t = normalize_target(target)
    return next(name for name, members in LEVELS.items() if t in members)


def _inside(interval: tuple[float, float], n: int) -> bool:
    lo, hi = interval
    return n > 0 and lo < n <= hi


def pm_hit(target: str | int, n: int) -> bool:
    """Precise Match: n (\\w+ count) in the target's PM interval (lo, hi]."""
    return _inside(PM_INTERVALS[normalize_target(target)], n)


def fm_hit(target: str | int, n: int) -> bool:
    """Flexible Match: n (\\w+ count) in the target's FM interval (lo, hi]."""
    return _inside(FM_INTERVALS[normalize_target(target)], n)


def mlt_for_count(n: int) -> str | None:
    """The MLT whose training window (lo, hi] holds a response of n words, or None (dropped)."""
    for mlt, window in MLT_WINDOWS.items():
        if _inside(window, n):
            return mlt
    return None


def mlt_for(words: int) -> str:
    """The MLT to generate a requested length with: above 800 `>800`, else the nearest MLT
    value (ties go to the smaller)."""
    if words > 800:
        return ">800"
    values = [int(v) for v in MLT_VALUES if v != ">800"]
    return str(min(values, key=lambda v: (abs(v - words), v)))


def tlg_target(words: int | None) -> str | None:
    """The TLG target a requested length is scored against: one of the eight numbers exactly,
    ">800" for 801+ words, else None (PM/FM are not defined for it)."""
    if words is None:
        return None
    if words > 800:
        return ">800"
    return str(words) if str(words) in TLG_TARGETS else None


def mlt_token(mlt: str | int) -> str:
    """"150" -> "[MLT:150]"."""
    return f"[MLT:{normalize_target(mlt)}]"


def strip_mlt(text: str) -> str:
    """Remove every MLT (numeric and `>800`) from a text, and the blank space they leave at
    its start."""
    stripped = MLT_PATTERN.sub("", text)
    return stripped.lstrip() if stripped != text else text


def leading_mlt(text: str) -> str | None:
    """The MLT a text starts with ("150", ">800"), or None."""
    match = _LEADING_MLT.match(text)
    return (match.group(1) + match.group(2)) if match else None


def baseline_sentence(target: str | int) -> str:
    """Ruler's baseline length sentence, "The response should have a word count of N words.";
    ">800" (or any ">N") becomes "more than 800". Any number is accepted, not only the nine."""
    text = str(target).strip()
    match = re.fullmatch(r"\[MLT:(>?\d+)\]", text)
    if match:
        text = match.group(1)
    text = re.sub(r"^>\s*", "more than ", text)
    return f"The response should have a word count of {text} words."
