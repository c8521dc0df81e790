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
# Past this many characters a paragraph is cut at sentence ends by a plain rule, not by pysbd,
# whose time grows faster than the text (a 200 KB paragraph took 40 s; a 20 MB upload on one
# line is one paragraph). No book has such a paragraph; the rule: . ! ? (and 。！？) with their
# closing quotes or brackets, then a space (none needed after the Chinese ones).
_PYSBD_MAX_CHARS = 20_000
_PLAIN_SENTENCE_END = re.compile(r"[.!?]+[\"'”’)\]]*(?=\s)|[。！？]+[”’」』）)]*")


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
    if len(para) <= _PYSBD_MAX_CHARS:
        ends = [e for _, e in sentence_spans(para)][:-1]
    else:
        ends = [m.end() for m in _PLAIN_SENTENCE_END.finditer(para) if m.end() < len(para)]
    bounds = [0]
    for e in ends:
        while e < len(para) and para[e].isspace():
            e += 1
        bounds.append(e)
    bounds.append(len(para))
    sentences = [para[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]

    pieces: list[str] = []
    current, estimate = "", 0
    margin = max(4, chunk_size // 64)
    for sentence in sentences:
        # Counting the whole piece again at every sentence is quadratic in a long paragraph: a
        # running sum of the sentences' counts (trailing spaces included, so it over-counts the
        # joins) stands in for the exact count until it comes within `margin` of the limit; each
        # exact count then resets the sum.
        n = count_tokens(sentence)
        if estimate + n <= chunk_size - margin:
            current += sentence
            estimate += n
            continue
        exact = count_tokens((current + sentence).strip())
        if exact <= chunk_size:
            current += sentence
            estimate = exact
            continue
        if current:
            pieces.append(current)
            current, estimate = "", 0
        if count_tokens(sentence.strip()) <= chunk_size:
            current, estimate = sentence, n
        else:
            hard = _hard_split(sentence, chunk_size, count_tokens)
            pieces.extend(hard[:-1])
            current, estimate = hard[-1], count_tokens(hard[-1])
    if current:
        pieces.append(current)
    return pieces


def _hard_split(text: str, chunk_size: int, count_tokens) -> list[str]:
    """Cut a sentence too big for a chunk at the last whitespace (else character) that fits.
    Each cut looks only at a window just longer than a chunk (doubled until it no longer fits):
    counting, searching or copying all the rest at every cut is quadratic on a 20 MB line."""
    pieces = []
    start = 0
    while True:
        size = chunk_size * 8
        while start + size < len(text) and count_tokens(text[start:start + size].strip()) <= chunk_size:
            size *= 2
        if start + size >= len(text) and count_tokens(text[start:].strip()) <= chunk_size:
            break
        window = text[start:start + size]  # over a chunk: the longest prefix that fits is inside
        cut = _longest_fitting_prefix(window, chunk_size, count_tokens)
        pieces.append(window[:cut])
        start += cut
    if start < len(text):
        pieces.append(text[start:])
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


# ----- the BooookScore reference's chunker (summarize protocol "paper") ----------------------------

# What the reference treats as a sentence end when it cuts an oversized paragraph: one of these
# characters, or a quote right after one of the first three. With commas as the fallback.
_REFERENCE_ENDS = frozenset(".?!")
_REFERENCE_ENDS_COMMA = frozenset(".?!,")


class ReferenceChunkingError(ValueError):
    """The reference chunker would lose text (its own no-loss assertion fails)."""


def reference_chunks(
    text: str,
    chunk_size: int = 2048,
    count_tokens: Callable[[str], int] = cl100k_tokens,
    include_empty_lines: bool = False,
) -> list[str]:
    """Chunks exactly as booookscore 0.1.3 (`booookscore.chunk`) cuts a book.

    - Every line (split on "\\n") is a paragraph; empty lines are dropped unless
      `include_empty_lines`. Nothing else is normalised (a "\\r" or spaces stay).
    - When the paragraphs joined with "\\n" fit `chunk_size` tokens, they are the one chunk.
    - Otherwise paragraphs are packed greedily, joined with "\\n": the joined text is counted
      as a whole, and when adding a paragraph would exceed `chunk_size`, the chunk closes and
      the paragraph starts the next one.
    - A paragraph over `chunk_size` on its own is cut together with the open chunk: the text
      is cut after its second-to-last sentence end (`. ? !`, or a quote right after one),
      again and again, until it fits (commas count as ends when fewer than two sentence
      ends are left; with fewer than two of those either, the text stays as it is); that
      piece is a chunk, and the rest is cut the same way until it fits, then stays open.
    - Tokens are cl100k_base, as the reference counts them. The reference asserts that no
      token was lost (counts with newlines removed); so does this (ReferenceChunkingError).
    Deterministic."""
    paragraphs = text.split("\n")
    if not include_empty_lines:
        paragraphs = [p for p in paragraphs if len(p) > 0]
    whole = "\n".join(paragraphs)
    if count_tokens(whole) <= chunk_size:
        return [whole]
    chunks: list[str] = []
    current = ""
    for para in paragraphs:
        candidate = current + "\n" + para if current else para
        if count_tokens(para) > chunk_size:
            current, rest = _reference_truncate(candidate, chunk_size, count_tokens)
            chunks.append(current)
            while count_tokens(rest) > chunk_size:
                current, rest = _reference_truncate(rest, chunk_size, count_tokens)
                chunks.append(current)
            current = rest
            continue
        if count_tokens(candidate) > chunk_size:
            chunks.append(current)
            current = para
        else:
            current = candidate
    if current:
        chunks.append(current)
    lost = count_tokens("".join(paragraphs).replace("\n", "")) - count_tokens("".join(chunks).replace("\n", ""))
    if lost != 0:
        raise ReferenceChunkingError(
            f"the reference chunker loses {lost} tokens of this text at chunk_size {chunk_size} "
            "(a paragraph over the chunk size with fewer than two sentence ends or commas left)"
        )
    return chunks


def _reference_ends(text: str, comma: bool) -> list[int]:
    ends = _REFERENCE_ENDS_COMMA if comma else _REFERENCE_ENDS
    found = []
    for i, c in enumerate(text):
        if c in ends:
            found.append(i)
        elif c in "\"'" and i > 0 and text[i - 1] in _REFERENCE_ENDS:
            found.append(i)
    return found


def _reference_truncate(text: str, chunk_size: int, count_tokens: Callable[[str], int]) -> tuple[str, str]:
    """(head within chunk_size, the cut-off rest) as the reference truncates: cut after the
    second-to-last end, repeatedly. With fewer than two ends (commas included) left, the head
    is returned as it is and the rest is dropped: the caller's no-loss check catches that."""
    original = text
    while count_tokens(text) > chunk_size:
        ends = _reference_ends(text, comma=False)
        if len(ends) < 2:
            ends = _reference_ends(text, comma=True)
            if len(ends) < 2:
                return text, ""
        text = text[: ends[-2] + 1]
    return text, original[len(text):]
