"""Find the length a prompt asks for: "800 words", "a 1,500-word essay", "300-500 words",
"at most 200 words", "2000字", "八百字", "1.5万字", "500字以内".

The LAST mention is the target of the text to write (AgentWrite's section prompts repeat the
whole plan, then name the current section's budget last); the LARGEST mention is taken as the
document total (a plan prompt names the total and also per-paragraph bounds).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

_NUM = r"(\d{1,3}(?:,\d{3})+|\d+(?:\.\d+)?)\s*(k|thousand)?"
_EN_UNITS = {"one": 1, "a": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
             "eight": 8, "nine": 9, "ten": 10, "twelve": 12, "fifteen": 15, "twenty": 20,
             "thirty": 30, "forty": 40, "fifty": 50}
_EN_RANGE = re.compile(r"(?:between\s+" + _NUM + r"\s+and|" + _NUM + r"\s*(?:-|–|—|to))\s*" + _NUM
                       + r"\s*[- ]?words?\b", re.I)
_EN_SINGLE = re.compile(_NUM + r"\s*[- ]?words?\b", re.I)
_EN_SPELLED = re.compile(r"\b(" + "|".join(_EN_UNITS) + r")\s+(hundred|thousand)\s*[- ]?words?\b", re.I)
_EN_AT_MOST = re.compile(r"(at most|no more than|(?<!no )fewer than|(?<!no )less than|under|not exceed(?:ing)?|"
                         r"maximum of|max\.?|up to|within|limit of|shorter than)\s*(?:about|around)?\s*$", re.I)
_EN_AT_LEAST = re.compile(r"(at least|no less than|no fewer than|more than|over|minimum of|"
                          r"longer than)\s*(?:about|around)?\s*$", re.I)

_ZH_DIGITS = {"零": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}
_ZH_UNITS = {"十": 10, "百": 100, "千": 1000}
_ZH_RANGE = re.compile(r"(\d+)\s*(?:-|~|～|到|至)\s*(\d+)\s*字")
_ZH_ARABIC = re.compile(r"(\d+(?:\.\d+)?)\s*(万|千|百)?\s*字")
_ZH_NUMERAL = re.compile(r"([零一二两三四五六七八九十百千万]+)字")
_ZH_AT_MOST_BEFORE = re.compile(r"(不超过|不多于|(?<!不)少于|最多|以内)\s*$")
_ZH_AT_MOST_AFTER = re.compile(r"^\s*(以内|之内|以下)")
_ZH_AT_LEAST_BEFORE = re.compile(r"(不少于|至少|不低于|(?<!不)多于|(?<!不)超过)\s*$")
_ZH_AT_LEAST_AFTER = re.compile(r"^\s*(以上)")


@dataclass(frozen=True)
class LengthRequest:
    words: int  # the target of the last mention (midpoint for a range)
    bound: str  # "about" | "at_most" | "at_least"
    largest: int  # the largest number of words mentioned anywhere: a document total


def _en_number(digits: str, scale: str | None) -> float:
    value = float(digits.replace(",", ""))
    return value * 1000 if scale else value


def zh_number(text: str) -> int:
    """Chinese numerals to an int: 八百 -> 800, 一万五千 -> 15000, 两千五百 -> 2500."""
    total = section = digit = 0
    for ch in text:
        if ch in _ZH_DIGITS:
            digit = _ZH_DIGITS[ch]
        elif ch in _ZH_UNITS:
            section += (digit or 1) * _ZH_UNITS[ch]
            digit = 0
        elif ch == "万":
            total += (section + digit) * 10_000
            section = digit = 0
    return total + section + digit


# Every length mention ends in "word(s)" or "字", and the number before it is short: the
# patterns only run in windows this wide before each such keyword. A long prompt (a book
# chunk of 10,000 characters) then costs microseconds instead of milliseconds per request,
# CPU that a benchmark's burst of requests would otherwise queue behind.
_WINDOW_BEFORE = 120
_WINDOW_AFTER = 8
_EN_KEYWORD = re.compile(r"word", re.I)
_ZH_KEYWORD = re.compile(r"字")


def _windows(text: str, keyword: re.Pattern) -> list[tuple[int, int]]:
    """Merged (start, end) spans of text around each keyword occurrence."""
    spans: list[tuple[int, int]] = []
    for m in keyword.finditer(text):
        start, end = max(0, m.start() - _WINDOW_BEFORE), min(len(text), m.end() + _WINDOW_AFTER)
        if spans and start <= spans[-1][1]:
            spans[-1] = (spans[-1][0], end)
        else:
            spans.append((start, end))
    return spans


def _find(pattern: re.Pattern, text: str, spans: list[tuple[int, int]]):
    # pos/endpos keep lookbehinds and \b seeing the real neighbouring characters.
    for start, end in spans:
        yield from pattern.finditer(text, start, end)


def parse_length(text: str) -> LengthRequest | None:
    mentions: list[tuple[int, int, int, int]] = []  # (end, start, words, is_range)
    en, zh = _windows(text, _EN_KEYWORD), _windows(text, _ZH_KEYWORD)
    for m in _find(_EN_RANGE, text, en):
        first = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
        low, high = _en_number(*first), _en_number(m.group(5), m.group(6))
        if 0 < low <= high:
            mentions.append((m.end(), m.start(), round((low + high) / 2), 1))
    for m in _find(_EN_SINGLE, text, en):
        mentions.append((m.end(), m.start(), round(_en_number(m.group(1), m.group(2))), 0))
    for m in _find(_EN_SPELLED, text, en):
        scale = 100 if m.group(2).lower() == "hundred" else 1000
        mentions.append((m.end(), m.start(), _EN_UNITS[m.group(1).lower()] * scale, 0))
    for m in _find(_ZH_RANGE, text, zh):
        low, high = int(m.group(1)), int(m.group(2))
        if 0 < low <= high:
            mentions.append((m.end(), m.start(), round((low + high) / 2), 1))
    for m in _find(_ZH_ARABIC, text, zh):
        scale = {"万": 10_000, "千": 1000, "百": 100}.get(m.group(2) or "", 1)
        mentions.append((m.end(), m.start(), round(float(m.group(1)) * scale), 0))
    for m in _find(_ZH_NUMERAL, text, zh):
        numeral = m.group(1)
        # "十字" (a cross) and the like are not lengths: need two characters or a big unit.
        if len(numeral) >= 2 or any(u in numeral for u in "百千万"):
            mentions.append((m.end(), m.start(), zh_number(numeral), 0))
    mentions = [x for x in mentions if x[2] > 0]
    if not mentions:
        return None
    # Last mention wins; at the same end, the range (it covers the single) wins.
    end, start, words, _ = max(mentions, key=lambda x: (x[0], x[3]))
    return LengthRequest(words=words, bound=_bound(text, start, end), largest=max(x[2] for x in mentions))


def _bound(text: str, start: int, end: int) -> str:
    before, after = text[max(0, start - 30):start], text[end:end + 6]
    if _EN_AT_MOST.search(before) or _ZH_AT_MOST_BEFORE.search(before) or _ZH_AT_MOST_AFTER.search(after):
        return "at_most"
    if _EN_AT_LEAST.search(before) or _ZH_AT_LEAST_BEFORE.search(before) or _ZH_AT_LEAST_AFTER.search(after):
        return "at_least"
    return "about"
