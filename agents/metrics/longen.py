"""LonGen's length-following score (Self-Lengthen, `eval/length_following_eval.py`).

Word count: `agents.text.count_words_selflengthen` (Self-Lengthen's counter: CJK characters,
CJK punctuation and full-width forms one each, plus whitespace tokens), not LongWriter's
`count_words`.

Each item states its length as a `type` and a `constraint` text ("about 3000 words",
"大约2000字", "2000-4000 words", "小于四千字"). The interval [a, b] a response should fall in:

    about L      [0.8 L, 1.2 L]
    range lo-hi  [lo, hi]
    above L      [L, 1.5 L]
    below L      [0.5 L, L]

score(n) = 1 inside [a, b]; max(0, 2n/a - 1) below a (0 at a/2); max(0, 3 - 2n/b) above b
(0 at 1.5 b). Scores are on LonGen's 0..1 scale and averaged over items (micro-average).

The constraint's numbers are read with `agents.length_target.find_numbers`, so "2,000",
"2.5k", Chinese numerals ("四千", as Self-Lengthen's length demands write half the time)
and "2-4k" all parse; the reference's digit regex reads only Arabic digits. When a
constraint holds more numbers than its type needs ("一篇约两千字"), the largest one
(two for a range) is the length.
"""
from __future__ import annotations

from typing import Literal

from agents.length_target import find_numbers

ConstraintType = Literal["about", "range", "above", "below"]
CONSTRAINT_TYPES: tuple[str, ...] = ("about", "range", "above", "below")


class ConstraintError(ValueError):
    """A constraint whose length cannot be read for its type."""


def constraint_interval(kind: str, constraint: str) -> tuple[float, float]:
    """[a, b] of a `kind` constraint (see module doc). Raises ConstraintError."""
    if kind not in CONSTRAINT_TYPES:
        raise ConstraintError(f"type must be one of {', '.join(CONSTRAINT_TYPES)}, got {kind!r}")
    numbers = find_numbers(constraint)
    if kind == "range":
        if len(numbers) < 2:
            raise ConstraintError(f"a range constraint needs two numbers, got {constraint!r}")
        low, high = sorted(sorted(numbers)[-2:])
        return float(low), float(high)
    if not numbers:
        raise ConstraintError(f"no number in constraint {constraint!r}")
    length = max(numbers)
    if kind == "about":
        return 0.8 * length, 1.2 * length
    if kind == "above":
        return float(length), 1.5 * length
    return 0.5 * length, float(length)  # below


def length_following(words: int, low: float, high: float) -> float:
    """LonGen's score of a response of `words` words against [low, high], in 0..1."""
    if words < low:
        return max(0.0, 2 * words / low - 1)
    if words > high:
        return max(0.0, 3 - 2 * words / high)
    return 1.0


def position(words: int, low: float, high: float) -> str:
    """"below", "inside" or "above" the interval."""
    return "below" if words < low else "above" if words > high else "inside"


__all__ = ["CONSTRAINT_TYPES", "ConstraintError", "constraint_interval", "length_following", "position"]
