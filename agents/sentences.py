"""Sentence splitting for English (pysbd's shipped rules: nothing is downloaded) and Chinese.

Used by chunking (to cut oversized paragraphs at sentence ends), by the summarizers (to
trim context at a sentence end) and by BooookScore (one verdict per sentence).

Rules, all deterministic:
- Blank lines are hard boundaries (a heading is never glued to the next sentence).
- Inside a paragraph, single line breaks are treated as spaces: books are hard-wrapped and
  pysbd would otherwise end a sentence at every line end.
- Chinese (agents.text.detect_language) is cut after 。！？!? and ellipses (……), keeping
  closing quotes and brackets with the sentence they close.
The paper used NLTK's punkt model; pysbd differs on a few abbreviations, so sentence
counts (BooookScore's denominator) can differ slightly from the paper's.
"""
from __future__ import annotations

import re
from functools import lru_cache

from agents.text import detect_language

_PARAGRAPH_BREAK = re.compile(r"\n[ \t\r\f\v]*\n\s*")
_ZH_SENTENCE = re.compile(r"[^。！？!?…]*(?:(?:[。！？!?]+|…+)[”’」』）)\"']*|$)")


@lru_cache(maxsize=1)
def _segmenter():
    import pysbd

    return pysbd.Segmenter(language="en", clean=False)


def _paragraph_spans(text: str) -> list[tuple[int, int]]:
    spans, start = [], 0
    for m in _PARAGRAPH_BREAK.finditer(text):
        spans.append((start, m.start()))
        start = m.end()
    spans.append((start, len(text)))
    return spans


def _english_spans(para: str) -> list[tuple[int, int]]:
    flat = para.replace("\n", " ")  # same length: offsets stay valid in `para`
    spans, cursor = [], 0
    for seg in _segmenter().segment(flat):
        seg = seg.strip()
        if not seg:
            continue
        at = flat.find(seg, cursor)
        if at < 0:  # pysbd altered the text (should not happen with clean=False): skip it
            continue
        spans.append((at, at + len(seg)))
        cursor = at + len(seg)
    return spans


def _chinese_spans(para: str) -> list[tuple[int, int]]:
    return [(m.start(), m.end()) for m in _ZH_SENTENCE.finditer(para) if m.end() > m.start()]


def sentence_spans(text: str, language: str | None = None) -> list[tuple[int, int]]:
    """(start, end) offsets of each sentence in `text`, in order, without surrounding spaces."""
    language = language or detect_language(text)
    split = _chinese_spans if language == "zh" else _english_spans
    spans: list[tuple[int, int]] = []
    for p_start, p_end in _paragraph_spans(text):
        para = text[p_start:p_end]
        for s, e in split(para):
            piece = para[s:e]
            lead = len(piece) - len(piece.lstrip())
            trail = len(piece) - len(piece.rstrip())
            if e - trail > s + lead:
                spans.append((p_start + s + lead, p_start + e - trail))
    return spans


def split_sentences(text: str, language: str | None = None) -> list[str]:
    """The sentences of `text`; inner line breaks are turned into spaces."""
    return [" ".join(text[s:e].split("\n")).strip() for s, e in sentence_spans(text, language)]
