"""Split a long text into chunks of at most `chunk_size` tokens, BooookScore-style.

- Paragraphs (blocks separated by blank lines) are packed greedily, in order, joined with a
  blank line: a chunk closes when the next paragraph would not fit.
- A paragraph bigger than a chunk is cut at sentence ends (agents.sentences); a single
  sentence bigger than a chunk is cut at the last space (or, with no space, the last
  character) that fits. Pieces of one paragraph are rejoined with the text between them,
  so only whitespace between paragraphs is normalised: no word is ever lost.
- Deterministic: the same text and size give the same chunks (a resumed job relies on it).

Tokens are counted with `count_tokens` (cl100k_base by default, BooookScore's tokenizer;
pass a model's own counter to chunk by its tokens).
"""
from __future__ import annotations

import re
from typing import Callable, NamedTuple

from agents.sentences import sentence_spans
from agents.text import count_tokens as cl100k_tokens

PARAGRAPH_SEP = "\n\n"
_BLANK_LINES = re.compile(r"\n[ \t\r\f\v]*\n\s*")


class Chunk(NamedTuple):
    text: str
    tokens: int  # as counted by the chunker's count_tokens


def chunk_text(
    text: str, chunk_size: int = 2048, count_tokens: Callable[[str], int] = cl100k_tokens
) -> list[str]:
    """Chunks of `text`, each at most `chunk_size` tokens (as counted by `count_tokens`)."""
    return [chunk.text for chunk in counted_chunks(text, chunk_size, count_tokens)]


def counted_chunks(
    text: str, chunk_size: int = 2048, count_tokens: Callable[[str], int] = cl100k_tokens
) -> list[Chunk]:
    """The chunks of `chunk_text` with their token counts (the chunker counts them anyway)."""
    if chunk_size < 1:
        raise ValueError("chunk_size must be positive")
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    paragraphs = [p.strip() for p in _BLANK_LINES.split(text)]
    paragraphs = [p for p in paragraphs if p]
    if not paragraphs:
        return []
    sep_tokens = count_tokens(PARAGRAPH_SEP)

    # Units are (text, glue): glue is what joins the unit to the previous one.
    units: list[tuple[str, str, int]] = []
    for para in paragraphs:
        n = count_tokens(para)
        if n <= chunk_size:
            units.append((para, PARAGRAPH_SEP, n))
            continue
        for k, piece in enumerate(_split_paragraph(para, chunk_size, count_tokens)):
            # Pieces keep their own leading/trailing spaces, so they rejoin with "".
            units.append((piece, PARAGRAPH_SEP if k == 0 else "", count_tokens(piece.strip())))

    chunks: list[Chunk] = []
    current: list[tuple[str, str]] = []
    current_tokens = 0
    exact: int | None = None  # the real count of current's text, when known
    for unit_text, glue, n in units:
        glue_tokens = sep_tokens if glue else 0
        if current and current_tokens + glue_tokens + n > chunk_size:
            # The sum of parts is only an estimate (BPE merges across joins): ask the real
            # count before closing, so packing stays greedy.
            actual = count_tokens(_join(current + [(unit_text, glue)]))
            if actual > chunk_size:
                chunks.extend(_close(current, chunk_size, count_tokens, exact))
                current, current_tokens, exact = [], 0, None
            else:
                current.append((unit_text, glue))
                current_tokens = exact = actual
                continue
        if not current:
            glue_tokens = 0
        current.append((unit_text, glue))
        current_tokens += glue_tokens + n
        exact = n if len(current) == 1 else None  # a lone unit's text is what was counted
    if current:
        chunks.extend(_close(current, chunk_size, count_tokens, exact))
    return chunks


def _join(units: list[tuple[str, str]]) -> str:
    out = units[0][0].lstrip()
    for unit_text, glue in units[1:]:
        out = (out.rstrip() + glue + unit_text.lstrip()) if glue else out + unit_text
    return out.strip()


def _close(units: list[tuple[str, str]], chunk_size: int, count_tokens, tokens: int | None = None) -> list[Chunk]:
    """Join a packed chunk (`tokens`: its count, when already known). Token counts are not
    exactly additive (BPE merges across joins): if the joined text overflows, the last units
    move to a chunk of their own."""
    joined = _join(units)
    if tokens is None:
        tokens = count_tokens(joined)
    if len(units) == 1 or tokens <= chunk_size:
        return [Chunk(joined, tokens)]
    cut = len(units) - 1
    while cut > 1 and count_tokens(_join(units[:cut])) > chunk_size:
        cut -= 1
    head = _join(units[:cut])
    rest = units[cut:]
    rest[0] = (rest[0][0], PARAGRAPH_SEP)
    return [Chunk(head, count_tokens(head)), *_close(rest, chunk_size, count_tokens)]


def _split_paragraph(para: str, chunk_size: int, count_tokens) -> list[str]:
    """Consecutive pieces of `para` (concatenating them gives `para` back), each fitting a chunk."""
    # Cut points at sentence ends; the whitespace after a sentence stays with it.
    ends = [e for _, e in sentence_spans(para)][:-1]
    bounds = [0]
    for e in ends:
        while e < len(para) and para[e].isspace():
            e += 1
        bounds.append(e)
    bounds.append(len(para))
    sentences = [para[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]

    pieces: list[str] = []
    current = ""
    for sentence in sentences:
        if count_tokens((current + sentence).strip()) <= chunk_size:
            current += sentence
            continue
        if current:
            pieces.append(current)
            current = ""
        if count_tokens(sentence.strip()) <= chunk_size:
            current = sentence
        else:
            hard = _hard_split(sentence, chunk_size, count_tokens)
            pieces.extend(hard[:-1])
            current = hard[-1]
    if current:
        pieces.append(current)
    return pieces


def _hard_split(text: str, chunk_size: int, count_tokens) -> list[str]:
    """Cut a sentence too big for a chunk at the last whitespace (else character) that fits."""
    pieces = []
    while count_tokens(text.strip()) > chunk_size:
        cut = _longest_fitting_prefix(text, chunk_size, count_tokens)
        pieces.append(text[:cut])
        text = text[cut:]
    if text:
        pieces.append(text)
    return pieces


def _longest_fitting_prefix(text: str, chunk_size: int, count_tokens) -> int:
    spaces = [m.end() for m in re.finditer(r"\s+", text)]
    for candidates in (spaces, range(1, len(text) + 1)):
        candidates = [c for c in candidates if 0 < c < len(text)]
        lo, hi, best = 0, len(candidates) - 1, 0
        while lo <= hi:  # binary search: token counts grow with the prefix
            mid = (lo + hi) // 2
            if count_tokens(text[: candidates[mid]].strip()) <= chunk_size:
                best, lo = candidates[mid], mid + 1
            else:
                hi = mid - 1
        if best:
            return best
    return 1  # a single character that is over the limit on its own: take it anyway
