"""Read the requested length out of a writing instruction ("about 3000 words", "5000字", "三千字").

`parse_target_words(text)` returns the number of words (English) or 字 (Chinese) the
instruction asks for, or None when it states none. The unit matches `agents.text.count_words`,
which counts CJK characters and English words alike, so the number is used as-is.

Rules (each found mention is a candidate; the LAST one in the text wins, since length
requirements usually close an instruction and earlier numbers tend to belong to material):
- English: "3000 words", "3,000-word", "10k words", "two thousand words", "300词".
- Chinese: "2000字", "两千字", "一万五千字", "1.5万字", "字数：2000左右", "2000余字".
- Ranges ("100至200字", "between 800 and 1000 words", "300-400 words") give the upper
  bound: LongBench-Write's hand annotations do the same.
- Per-item counts are multiplied by the item count when one is stated: "五篇日记…每篇400字"
  is 2000, "分两部分写，各写1000字" is 2000, "5 diaries of 400 words each" is 2000.
- Pages, as a last resort ("a 50-page novel"), count WORDS_PER_PAGE words each.

It is a heuristic: about one in ten LongBench-Write prompts states its length only
implicitly, which is why jobs accept an explicit `target_words`.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agents.text import detect_language

if TYPE_CHECKING:
    from agents.context import JobContext

DEFAULT_MAX_TARGET_WORDS = 100_000  # Settings.max_target_words, when no settings are at hand
WORDS_PER_PAGE = 200  # LongBench-Write annotates "a 50-page novel" as 10,000 words
MIN_SPELLED_OUT = 50  # spelled-out numbers below this next to 字/word are idioms ("十字", "a word")

_ZH_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "俩": 2, "三": 3, "四": 4, "五": 5,
              "六": 6, "七": 7, "八": 8, "九": 9}
_ZH_UNITS = {"十": 10, "百": 100, "千": 1000}
_ZH_NUM_CHARS = "零〇一二两俩三四五六七八九十百千万"

_EN_SMALL = {
    "a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14,
    "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20,
    "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90,
}
_EN_SCALE = {"hundred": 100, "thousand": 1000}

# A number as written in instructions: "3000", "3,000", "1.5", "10k", "1.5万", "三千五百".
_ARABIC = r"\d{1,3}(?:,\d{3})+|\d+(?:\.\d+)?"
_NUM = rf"(?:(?:{_ARABIC})\s*[kK千万]?|[{_ZH_NUM_CHARS}]+)"

_RANGE_SEP = r"\s*(?:至|到|-|–|—|~|～|to|and)\s*"
_UNIT_WORDS = r"(?:words?\b|个字|字|词)"

# "between 800 and 1000 words", "100至200字", "300-400 words"
_RANGE = re.compile(rf"(?<![\d.,])(?P<a>{_NUM}){_RANGE_SEP}(?P<b>{_NUM})\s*(?:多|余)?\s*-?\s*{_UNIT_WORDS}", re.I)
# "3000 words", "3,000-word", "2000字", "两千余字"
_SINGLE = re.compile(rf"(?<![\d.,])(?P<n>{_NUM})\s*(?:多|余)?\s*-?\s*{_UNIT_WORDS}", re.I)
# "two thousand words", "five-hundred-word": up to five words before "word(s)"
_EN_WORDS = re.compile(r"\b(?P<w>(?:[a-z]+[\s-]+){1,5})words?\b", re.I)
# "字数要求：2000左右", "讲稿字数1400左右", "字数：不少于3000"
_ZH_FIELD = re.compile(
    rf"字数[^\d{_ZH_NUM_CHARS}\n]{{0,8}}(?P<a>{_NUM})(?:{_RANGE_SEP}(?P<b>{_NUM}))?"
)
# "50-page novel", "10 pages"
_PAGES = re.compile(rf"(?<![\d.,])(?P<n>{_ARABIC})\s*-?\s*pages?\b", re.I)

# Per-item phrases and the counts they multiply with.
_ZH_CLASSIFIERS = "篇|个|段|部分|节|章|天|首|封|则|幕|课|次课|条|份"
_ZH_EACH = re.compile(rf"(?:每(?P<cls>{_ZH_CLASSIFIERS})[^，。,；;\n\d{_ZH_NUM_CHARS}]{{0,4}}|各写?约?|分别写?约?)$")
_ZH_COUNT = re.compile(rf"(?P<n>\d+|[{_ZH_NUM_CHARS}]+)\s*(?P<cls>{_ZH_CLASSIFIERS})")
_EN_EACH_AFTER = re.compile(r"^\s*(?:words?)?\s*each\b", re.I)
_EN_EACH_BEFORE = re.compile(r"\beach\b[^.\n]{0,30}$", re.I)
_EN_COUNT = re.compile(r"\b(?P<n>\d+|two|three|four|five|six|seven|eight|nine|ten|twelve|fifteen|twenty)\s+(?:[a-z-]+\s+){0,2}?[a-z-]*s\b", re.I)


@dataclass(frozen=True)
class LengthMention:
    """One length requirement found in the text."""

    words: int
    start: int
    end: int
    kind: str  # "words", "range", "field", "pages", "each"
    low: int | None = None  # a range's lower bound ("5,000-6,000 words": 5000; words is 6000)


def parse_chinese_number(text: str) -> int | None:
    """三千 -> 3000, 一万五千 -> 15000, 一万五 -> 15000, 两百 -> 200, 十五 -> 15; None if not a numeral."""
    if not text or any(ch not in _ZH_NUM_CHARS for ch in text):
        return None
    total = 0  # completed 万 groups
    section = 0  # below 万
    digit: int | None = None
    last_unit = 1
    after_zero = False  # a 零 since the last unit: the next digit is not the next lower unit
    for ch in text:
        if ch in _ZH_DIGITS:
            digit = _ZH_DIGITS[ch]
            after_zero = after_zero or digit == 0
        elif ch in _ZH_UNITS:
            unit = _ZH_UNITS[ch]
            section += (1 if digit is None else digit) * unit
            digit, last_unit, after_zero = None, unit, False
        else:  # 万
            total += (section + (digit or 0)) * 10000 or 10000
            section, digit, last_unit, after_zero = 0, None, 10000, False
    if digit is not None:
        # A trailing digit right after a unit is the next lower unit: 一万五 = 15000, 三千五 = 3500;
        # after a 零 it is itself: 四百零八 = 408.
        section += digit * (last_unit // 10) if last_unit > 1 and len(text) > 1 and not after_zero else digit
    value = total + section
    return value or None


def parse_number(text: str) -> int | None:
    """Arabic ("3,000", "1.5", "10k", "1.5万"), Chinese ("三千") or English ("two thousand") numbers."""
    text = text.strip()
    if not text:
        return None
    m = re.fullmatch(rf"({_ARABIC})\s*([kK千万]?)", text)
    if m:
        value = float(m.group(1).replace(",", ""))
        value *= {"": 1, "k": 1000, "K": 1000, "千": 1000, "万": 10000}[m.group(2)]
        return int(round(value)) or None
    zh = parse_chinese_number(text)
    if zh is not None:
        return zh
    return _parse_english_number(text)


def _parse_english_number(text: str) -> int | None:
    parts = [p for p in re.split(r"[\s-]+", text.lower()) if p and p != "and"]
    if not parts:
        return None
    total, current = 0, 0
    for i, part in enumerate(parts):
        if part in ("a", "an") and (i > 0 or len(parts) == 1 or parts[1] not in _EN_SCALE):
            return None  # "a" is a number only in "a hundred", "a thousand"
        if part in _EN_SMALL:
            current += _EN_SMALL[part]
        elif part == "hundred":
            current = (current or 1) * 100
        elif part == "thousand":
            total += (current or 1) * 1000
            current = 0
        else:
            return None
    return (total + current) or None


_SCALES = {"k": 1000, "K": 1000, "百": 100, "千": 1000, "万": 10000}
_EN_NUMBER_WORD = "|".join(sorted((*_EN_SMALL, *_EN_SCALE), key=len, reverse=True))
# One number: Arabic with an optional scale ("2,000", "2.5k", "1.5万"), a Chinese numeral
# ("两千五百") or a run of English number words ("two thousand five hundred").
_ANY_NUMBER = re.compile(
    rf"(?<![\d.,])(?P<arabic>{_ARABIC})(?:\s*(?P<scale>[kK](?![a-zA-Z])|[千万]))?"
    rf"|(?P<zh>[{_ZH_NUM_CHARS}]+)"
    rf"|\b(?P<en>(?:{_EN_NUMBER_WORD})(?:[\s-]+(?:and[\s-]+)?(?:{_EN_NUMBER_WORD}))*)\b",
    re.I,
)


def find_numbers(text: str) -> list[int]:
    """Every number in `text`, in order: Arabic ("2000", "2,000", "2.5k", "1.5万"), Chinese
    ("四千", "两千五百") or English ("two thousand"). In a range the second number's scale
    carries over to a bare first one: "2-4k" is 2000 and 4000, "两至四千" 2000 and 4000."""
    found: list[tuple[int, int | None, re.Match]] = []  # (value, scale of its last unit, match)
    for m in _ANY_NUMBER.finditer(text):
        value = parse_number(m.group(0))
        if not value:
            continue  # "a", "an": not a number on their own
        if m.group("arabic"):
            scale = _SCALES.get(m.group("scale") or "")
        elif m.group("zh"):
            scale = _SCALES.get(m.group("zh")[-1]) if len(m.group("zh")) > 1 else None
        else:
            scale = None
        found.append((value, scale, m))
    numbers = [value for value, _, _ in found]
    for i in range(1, len(found)):
        (first, first_scale, a), (second, scale, b) = found[i - 1], found[i]
        if (scale and not first_scale and first * scale <= second
                and re.fullmatch(_RANGE_SEP, text[a.end():b.start()], re.I)):
            numbers[i - 1] = first * scale
    return numbers


def _multiplier_before(text: str, pos: int, cls: str | None) -> int | None:
    """The item count a per-item length ("每篇400字") refers to: the nearest "五篇" before it."""
    counts = list(_ZH_COUNT.finditer(text, 0, pos))
    if cls:
        same = [m for m in counts if m.group("cls") == cls]
        counts = same or counts
    for m in reversed(counts):
        n = parse_number(m.group("n"))
        if n and 1 < n <= 100:
            return n
    return None


def _english_multiplier(text: str, pos: int) -> int | None:
    sentence_start = max(text.rfind(".", 0, pos), text.rfind("\n", 0, pos)) + 1
    counts = list(_EN_COUNT.finditer(text, sentence_start, pos))
    for m in reversed(counts):
        n = parse_number(m.group("n"))
        if n and 1 < n <= 100:
            return n
    return None


def find_length_mentions(text: str) -> list[LengthMention]:
    """Every length requirement in `text`, in order of position (overlaps resolved)."""
    found: list[LengthMention] = []
    taken: list[tuple[int, int]] = []

    def free(start: int, end: int) -> bool:
        return all(end <= s or start >= e for s, e in taken)

    def add(words: int | None, start: int, end: int, kind: str, low: int | None = None) -> None:
        if words and words > 0 and free(start, end):
            found.append(LengthMention(words, start, end, kind, low if low and low < words else None))
            taken.append((start, end))

    for m in _RANGE.finditer(text):
        a, b = parse_number(m.group("a")), parse_number(m.group("b"))
        if a and b and a < b:  # "3-4 words" style noise is still a range; "2024-2025" has no unit
            add(b, m.start(), m.end(), "range", low=a)
    for m in _ZH_FIELD.finditer(text):
        values = [parse_number(m.group(g)) for g in ("a", "b") if m.group(g)]
        values = [v for v in values if v]
        if values:
            add(max(values), m.start("a"), m.end(), "field", low=min(values) if len(values) > 1 else None)
    for m in _SINGLE.finditer(text):
        n = parse_number(m.group("n"))
        # "十字路口", "一字一句", "三字经": spelled-out numbers that small are idioms, not lengths.
        if n and (n >= MIN_SPELLED_OUT or m.group("n")[0].isdigit()):
            add(n, m.start(), m.end(), "words")
    for m in _EN_WORDS.finditer(text):
        tokens = [t for t in re.split(r"[\s-]+", m.group("w")) if t]
        for i in range(len(tokens)):  # the longest run of number words right before "words"
            n = _parse_english_number(" ".join(tokens[i:]))
            if n:
                if n >= MIN_SPELLED_OUT:  # "in a word", "one word" are not lengths
                    offset = m.group("w").lower().find(tokens[i].lower())
                    add(n, m.start() + offset, m.end(), "words")
                break
    found.sort(key=lambda x: x.start)

    # Per-item lengths become totals when the item count is stated.
    resolved: list[LengthMention] = []
    for mention in found:
        before = text[max(0, mention.start - 12):mention.start]
        after = text[mention.end:mention.end + 12]
        zh_each = _ZH_EACH.search(before)
        factor = None
        if zh_each:
            factor = _multiplier_before(text, mention.start - len(before) + zh_each.start(), zh_each.group("cls"))
        elif _EN_EACH_AFTER.search(after) or _EN_EACH_BEFORE.search(text[max(0, mention.start - 40):mention.start]):
            factor = _english_multiplier(text, mention.start)
        if factor:
            mention = LengthMention(mention.words * factor, mention.start, mention.end, "each",
                                    mention.low * factor if mention.low else None)
        resolved.append(mention)

    if not resolved:
        for m in _PAGES.finditer(text):
            n = parse_number(m.group("n"))
            if n:
                resolved.append(LengthMention(n * WORDS_PER_PAGE, m.start(), m.end(), "pages"))
    return resolved


# -- reading the demand --------------------------------------------------------------------------
#
# A request is more than one number: "less than 5,000 words" means [2,500, 5,000], "more than
# 7,000" [7,000, 10,500], "5,000-6,000" [5,000, 6,000]; in "a paper of over 5000 words ... an
# abstract of around 500 words" the 5,000 is the whole piece and the 500 a part of it.

DemandKind = Literal["about", "at_least", "at_most", "range", "pages", "paragraphs"]
Bound = Literal["about", "at_least", "at_most", "range"]
DemandSource = Literal["given", "rules", "model"]
WORDS_PER_PARAGRAPH = 100  # "a five-paragraph essay": a count of paragraphs, the last resort
AIM_TOLERANCE = 0.1  # the aim of a one-sided demand keeps +-10% of itself inside the interval

_ABOUT_WORDS = r"(?:about|around|approximately|roughly|some|circa|~|约|大约|大概)"
_AT_MOST_BEFORE = re.compile(
    r"(?:at\s+most|at\s+the\s+most|no\s+more\s+than|not\s+more\s+than|(?<!no\s)(?<!not\s)(?:fewer|less)\s+than|"
    r"under|below|not\s+(?:to\s+)?exceed(?:ing)?|no\s+longer\s+than|shorter\s+than|maximum(?:\s+of)?|max\.?|"
    r"up\s+to|within|limit(?:ed)?\s+(?:of|to)|不超过|不多于|不得超过|不要超过|不能超过|(?<!不)少于|(?<!不)低于|"
    r"最多|至多|控制在)\s*" + _ABOUT_WORDS + r"?\s*$", re.I)
_AT_LEAST_BEFORE = re.compile(
    r"(?:at\s+least|no\s+less\s+than|not\s+less\s+than|no\s+fewer\s+than|not\s+fewer\s+than|more\s+than|over|"
    r"above|exceed(?:ing)?|minimum(?:\s+of)?|min\.?|longer\s+than|upwards\s+of|in\s+excess\s+of|不少于|不低于|"
    r"不得少于|不能少于|不要少于|至少|最少|(?<!不)多于|(?<!不)超过|大于)\s*" + _ABOUT_WORDS + r"?\s*$", re.I)
_AT_MOST_AFTER = re.compile(r"^\s*(?:以内|之内|以下|内|or\s+(?:less|fewer|shorter)\b|at\s+most\b|max(?:imum)?\b|tops\b)",
                            re.I)
_AT_LEAST_AFTER = re.compile(r"^\s*(?:以上|or\s+(?:more|longer)\b|at\s+least\b|minimum\b|min\b|plus\b)", re.I)
_MORE_THAN_MARK = re.compile(r"(?:多|余)\s*-?\s*(?:个字|字|词)$")  # "2000多字", "两千余字": 2,000-odd
# Numbers that describe material, not the answer: "Summarize this 300-word note".
_MATERIAL_BEFORE = re.compile(r"(?:\b(?:this|these|the\s+following|the\s+above|the\s+attached|the\s+given|"
                              r"the\s+provided|my|your)|这篇|这段|这份|上面的?|下面的?|原文)\s*$", re.I)
# Parts of a piece: a number in a clause about one of them is for that part.
_PART_NOUN = re.compile(
    r"\b(?:abstract|summary|introduction|intro|conclusion|title|headline|subtitle|caption|preface|foreword|"
    r"prologue|epilogue|opening|ending|outline|synopsis|tagline|slogan|(?:first|last|final|opening|closing)\s+"
    r"(?:paragraph|section|chapter))s?\b|摘要|引言|前言|序言|结论|结语|标题|题目|开头|结尾|简介|导语|提纲|大纲|小结",
    re.I)
_CLAUSE_BREAK = re.compile(r"[,;:，；：。.!?！？\n]|\b(?:with|and|including|plus|then)\b", re.I)
_PARAGRAPHS = re.compile(
    r"(?<![\d.,第])(?P<n>\d+|two|three|four|five|six|seven|eight|nine|ten|twelve|fifteen|twenty|"
    r"[一二两三四五六七八九十]+)\s*-?\s*(?:paragraphs?\b|个?段落|段(?![落时间位子]))", re.I)


@dataclass(frozen=True)
class PartDemand:
    """A length for one part of the piece ("an abstract of around 500 words")."""

    words: int
    stated: str


@dataclass(frozen=True)
class LengthDemand:
    """What a request asks for, read as an interval (LonGen's reading):

        about L      [0.8 L, 1.2 L]      aim L
        at least L   [L, 1.5 L]          aim L / 0.9 (its +-10% stays inside), at most the middle
        at most L    [0.5 L, L]          aim L / 1.1, at least the middle
        range lo-hi  [lo, hi]            aim the middle

    `kind` is the bound, or "pages" / "paragraphs" when the count is of those (then `bound`
    says which bound, and `words` is the count converted: WORDS_PER_PAGE, WORDS_PER_PARAGRAPH).
    `words` is the number stated for the whole piece (a range: its upper bound, as
    LongBench-Write annotates); `parts` are numbers for parts of it. `ambiguous` when the rules
    found several whole-piece numbers and could not tell which is meant (they then keep the
    last); `read_length_demand` asks the model in that case."""

    kind: DemandKind
    bound: Bound
    words: int
    low: int
    high: int
    aim: int
    stated: str = ""
    source: DemandSource = "rules"
    count: int | None = None
    parts: tuple[PartDemand, ...] = ()
    ambiguous: bool = False
    candidates: tuple[int, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "bound": self.bound, "words": self.words, "low": self.low, "high": self.high,
            "aim": self.aim, "stated": self.stated, "source": self.source, "count": self.count,
            "parts": [{"words": p.words, "stated": p.stated} for p in self.parts],
            "ambiguous": self.ambiguous, "candidates": list(self.candidates),
        }


def demand_interval(bound: str, words: int, low: int | None = None) -> tuple[int, int]:
    """[low, high] of a demand (see LengthDemand)."""
    if bound == "range" and low:
        return low, words
    if bound == "at_least":
        return words, math.floor(1.5 * words)
    if bound == "at_most":
        return math.ceil(0.5 * words), words
    return math.ceil(0.8 * words), math.floor(1.2 * words)


def demand_aim(bound: str, words: int, low: int, high: int) -> int:
    """The length to write to inside [low, high] (see LengthDemand)."""
    middle = (low + high) / 2
    if bound == "at_least":
        aim = min(math.ceil(words / (1 - AIM_TOLERANCE)), middle)
    elif bound == "at_most":
        aim = max(math.floor(words / (1 + AIM_TOLERANCE)), middle)
    elif bound == "range":
        aim = middle
    else:
        aim = words
    return max(1, min(high, max(low, round(aim))))


def make_demand(bound: str, words: int, *, low: int | None = None, kind: str | None = None,
                source: str = "given", stated: str = "", count: int | None = None,
                parts: tuple[PartDemand, ...] = (), ambiguous: bool = False,
                candidates: tuple[int, ...] = ()) -> LengthDemand:
    """A LengthDemand with its interval and aim worked out."""
    if bound == "range" and not (low and low < words):
        bound = "about"
    lo, hi = demand_interval(bound, words, low)
    return LengthDemand(kind=kind or bound, bound=bound, words=words, low=lo, high=hi,
                        aim=demand_aim(bound, words, lo, hi), stated=stated, source=source, count=count,
                        parts=parts, ambiguous=ambiguous, candidates=candidates)


def given_demand(words: int) -> LengthDemand:
    """The reading of a `target_words` given as a number: about that many."""
    return make_demand("about", words, source="given")


def _bound_of(text: str, mention: LengthMention) -> str:
    if mention.low:
        return "range"
    before = text[max(0, mention.start - 30):mention.start]
    after = text[mention.end:mention.end + 12]
    if _AT_MOST_BEFORE.search(before) or _AT_MOST_AFTER.search(after):
        return "at_most"
    if (_AT_LEAST_BEFORE.search(before) or _AT_LEAST_AFTER.search(after)
            or _MORE_THAN_MARK.search(text[mention.start:mention.end])):
        return "at_least"
    return "about"


def _clause_before(text: str, start: int) -> str:
    window = text[max(0, start - 60):start]
    breaks = list(_CLAUSE_BREAK.finditer(window))
    return window[breaks[-1].end():] if breaks else window


def _paragraph_mentions(text: str) -> list[LengthMention]:
    out = []
    for m in _PARAGRAPHS.finditer(text):
        n = parse_number(m.group("n"))
        if n and 1 < n <= 100:
            out.append(LengthMention(n * WORDS_PER_PARAGRAPH, m.start(), m.end(), "paragraphs"))
    return out


def read_demand(text: str) -> LengthDemand | None:
    """The length demand of an instruction by rules (no model), or None when it states none.

    Each length mention (`find_length_mentions`; a count of paragraphs as the last resort) is
    read for its bound from the words around it. With several mentions, one that describes
    material ("this 300-word note") is not a demand, and one in a clause about a part of the
    piece (an abstract, a title, the introduction, 摘要, 标题 ...) is a part; of the rest, the
    whole-piece demand is the last one, and the reading is `ambiguous` when they disagree."""
    mentions = find_length_mentions(text) or _paragraph_mentions(text)
    if not mentions:
        return None
    whole, parts, material = [], [], []
    for m in mentions:
        if len(mentions) > 1 and _MATERIAL_BEFORE.search(text[max(0, m.start - 25):m.start]):
            material.append(m)
        elif len(mentions) > 1 and _PART_NOUN.search(_clause_before(text, m.start)):
            parts.append(m)
        else:
            whole.append(m)
    ambiguous = False
    if not whole:  # every number is material or a part: keep the last demand, but say it is unclear
        ambiguous = True
        whole = parts or material
        parts = [p for p in parts if p is not whole[-1]]
    elif len({m.words for m in whole}) > 1:
        ambiguous = True
    chosen = whole[-1]
    bound = _bound_of(text, chosen)
    kind = chosen.kind if chosen.kind in ("pages", "paragraphs") else bound
    count = None
    if chosen.kind == "pages":
        count = chosen.words // WORDS_PER_PAGE
    elif chosen.kind == "paragraphs":
        count = chosen.words // WORDS_PER_PARAGRAPH
    return make_demand(
        bound, chosen.words, low=chosen.low, kind=kind, source="rules", stated=text[chosen.start:chosen.end],
        count=count, parts=tuple(PartDemand(p.words, text[p.start:p.end]) for p in parts if p is not chosen),
        ambiguous=ambiguous, candidates=tuple(dict.fromkeys(m.words for m in mentions)),
    )


DEMAND_TEMPLATE = "length/demand.j2"
DEMAND_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "whole_piece_words": {"type": ["integer", "null"], "minimum": 1},
        "kind": {"type": "string", "enum": ["about", "at_least", "at_most", "range"]},
        "range_low": {"type": ["integer", "null"], "minimum": 1},
    },
    "required": ["whole_piece_words", "kind"],
}


async def read_length_demand(ctx: "JobContext", text: str, key: str = "length_demand") -> LengthDemand | None:
    """The demand of `text`: by rules; when they are ambiguous, the model reads it (step `key`,
    structured output, temperature 0). The model's number must be one the text states (the
    rules' reading stands otherwise, or when its answer never validates)."""
    demand = read_demand(text)
    if demand is None or not demand.ambiguous:
        return demand

    async def ask() -> dict[str, Any]:
        from agents.llm.structured import chat_json
        from agents.llm.types import GenOptions, LLMError

        prompt = ctx.render(DEMAND_TEMPLATE, text=text, candidates=list(demand.candidates))
        try:
            value, _ = await chat_json(ctx.llm, [{"role": "user", "content": prompt}], DEMAND_SCHEMA,
                                       GenOptions(max_tokens=128, temperature=0.0))
        except LLMError as err:  # StructuredOutputError and friends: the rules' reading stands
            return {"error": f"{type(err).__name__}: {err}"}
        return {"answer": value}

    asked = await ctx.step(key, ask)
    answer = asked.get("answer") or {}
    words, low = answer.get("whole_piece_words"), answer.get("range_low")
    numbers = set(find_numbers(text)) | set(demand.candidates)
    if not isinstance(words, int) or words not in numbers:
        return demand
    bound = answer.get("kind", "about")
    low = low if bound == "range" and isinstance(low, int) and low in numbers and low < words else None
    if bound == "range" and low is None:
        bound = "about"
    stated = demand.stated if words == demand.words else str(words)
    parts = tuple(p for p in demand.parts if p.words != words)
    if words != demand.words:
        parts += (PartDemand(demand.words, demand.stated),)
    return make_demand(bound, words, low=low, source="model", stated=stated, parts=parts, ambiguous=True,
                       candidates=demand.candidates,
                       kind=demand.kind if words == demand.words and demand.kind in ("pages", "paragraphs") else None,
                       count=demand.count if words == demand.words else None)


class PartDemandRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    words: int
    stated: str


class LengthDemandRecord(BaseModel):
    """How a request's length was read (`LengthDemand.as_dict`), as results record it."""

    model_config = ConfigDict(extra="forbid")

    kind: DemandKind = Field(description="about, at_least, at_most, range; pages or paragraphs when counted in those")
    bound: Bound
    words: int = Field(description="the number stated for the whole piece (a range: its upper bound)")
    low: int = Field(description="the interval meant: about L [0.8L, 1.2L], at least L [L, 1.5L], "
                     "at most L [0.5L, L], a range [lo, hi]")
    high: int
    aim: int = Field(description="the length written to, inside [low, high]")
    stated: str = Field(description="the words of the request that state it")
    source: DemandSource = Field(description="given (target_words), rules, or model (the rules disagreed)")
    count: int | None = Field(description="pages or paragraphs, when counted in those")
    parts: list[PartDemandRecord] = Field(description="lengths stated for parts of the piece")
    ambiguous: bool = Field(description="the rules found several whole-piece lengths")
    candidates: list[int] = Field(description="every length the rules found")


def parse_target_words(text: str) -> int | None:
    """The length the instruction asks for (words / 字), or None when it states none: the
    number of the whole-piece demand (`read_demand`; a range gives its upper bound)."""
    demand = read_demand(text)
    return demand.words if demand else None


def length_sentence(words: int, language: str) -> str:
    """The words that state a length: "(about 4,300 words)", "（约4300字）"."""
    if language == "zh":
        return f"（约{words}字）"
    return f"(about {words:,} words)"


def with_stated_length(instruction: str, words: int, language: str | None = None) -> str:
    """`instruction` with its length stated at the end, in its own language (detected when not
    given). The result always reads back as `words` with parse_target_words: when the
    sentence on the same line would be misread (e.g. "...each of the five chapters (about
    3,000 words)" reads as five times 3,000), it goes on a line of its own."""
    instruction = instruction.rstrip()
    language = language or detect_language(instruction)
    sentence = length_sentence(words, language)
    same_line = f"{instruction}{'' if language == 'zh' else ' '}{sentence}"
    if parse_target_words(same_line) == words:
        return same_line
    return f"{instruction}\n\n{sentence}"


def without_stated_length(instruction: str, words: int | None) -> str:
    """`instruction` without a length sentence that with_stated_length added at its end."""
    if words:
        for language in ("en", "zh"):
            sentence = length_sentence(words, language)
            if instruction.endswith(sentence) and instruction[:-len(sentence)].strip():
                return instruction[:-len(sentence)].rstrip()
    return instruction


def check_target(target: int, max_target: int) -> None:
    if not 1 <= target <= max_target:
        raise ValueError(f"target_words must be between 1 and {max_target}, got {target}")


def validate_target_words(value: Any, context: dict[str, Any] | None) -> Any:
    """A params model's `target_words` validator: a given number must lie in 1..max_target_words
    (from the validation context, as the API passes the settings' value; else the default)."""
    if isinstance(value, int):
        check_target(value, (context or {}).get("max_target_words", DEFAULT_MAX_TARGET_WORDS))
    return value
