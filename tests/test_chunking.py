"""Chunking by tokens, sentence splitting and Gutenberg stripping (pure functions)."""
from __future__ import annotations

from pathlib import Path

import pytest

from agents.chunking import chunk_text, counted_chunks
from agents.gutenberg import strip_gutenberg
from agents.sentences import sentence_spans, split_sentences
from agents.text import count_tokens

BOOK = Path(__file__).resolve().parent / "data" / "pride_and_prejudice.txt"


@pytest.fixture(scope="module")
def book() -> str:
    return strip_gutenberg(BOOK.read_text(encoding="utf-8"))


# ----- Gutenberg ---------------------------------------------------------------------------------

def test_strip_gutenberg_keeps_only_the_book():
    raw = BOOK.read_text(encoding="utf-8")
    text = strip_gutenberg(raw)
    assert text.startswith("PRIDE AND PREJUDICE")
    assert text.rstrip().endswith("had been the means of uniting them.")
    assert "Gutenberg" not in text and "Produced by" not in text
    assert len(text) < len(raw) and "It is a truth universally acknowledged" in text


def test_strip_gutenberg_leaves_other_texts_alone_and_handles_crlf():
    plain = "Chapter 1\n\nNo markers here. Project Gutenberg is mentioned in passing.\n"
    assert strip_gutenberg(plain) == plain
    crlf = (
        "Header\r\n*** START OF THE PROJECT GUTENBERG EBOOK X ***\r\n\r\nBody line.\r\n\r\n"
        "*** END OF THE PROJECT GUTENBERG EBOOK X ***\r\nLicence\r\n"
    )
    assert strip_gutenberg(crlf) == "Body line.\n"


# ----- sentences ---------------------------------------------------------------------------------

def test_split_sentences_english_abbreviations_wrapping_and_paragraphs():
    text = (
        "Mr. Bennet spoke to Dr. Jones at 3 p.m. on Friday. He left\nearly! Did she?\n\n"
        "Chapter 2\n\n\"Very fine,\" she said."
    )
    assert split_sentences(text) == [
        "Mr. Bennet spoke to Dr. Jones at 3 p.m. on Friday.",
        "He left early!",
        "Did she?",
        "Chapter 2",
        "\"Very fine,\" she said.",
    ]


def test_split_sentences_chinese_keeps_closing_quotes():
    assert split_sentences("他走了。她说：“你好！”然后呢？没有……结束了") == [
        "他走了。", "她说：“你好！”", "然后呢？", "没有……", "结束了"
    ]


def test_sentence_spans_point_into_the_text():
    text = "One. Two?\n\n  Three!  "
    assert [text[s:e] for s, e in sentence_spans(text)] == ["One.", "Two?", "Three!"]
    assert split_sentences("") == [] and split_sentences("   ") == []


# ----- chunking ----------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [2048, 512])
def test_book_chunks_respect_size_lose_nothing_and_are_deterministic(book, size):
    chunks = chunk_text(book, size)
    assert all(count_tokens(c) <= size for c in chunks)
    assert " ".join(chunks).split() == book.split()  # every word, in order
    assert chunk_text(book, size) == chunks
    # Greedy packing: a chunk plus the next one's first paragraph would not have fitted.
    for a, b in zip(chunks, chunks[1:]):
        first_paragraph = b.split("\n\n")[0]
        assert count_tokens(a + "\n\n" + first_paragraph) > size


def test_pride_and_prejudice_at_2048_tokens():
    chunks = chunk_text(strip_gutenberg(BOOK.read_text(encoding="utf-8")), 2048)
    assert len(chunks) == 82  # 160,980 tokens in about 40 paragraphs per chunk


@pytest.mark.parametrize("size", [2048, 100])
def test_counted_chunks_carry_their_exact_token_counts(book, size):
    text = book[:200_000] + "\n\n" + " ".join(f"Sentence {i} goes on." for i in range(400))  # one long paragraph
    counted = counted_chunks(text, size)
    assert [c.text for c in counted] == chunk_text(text, size)
    assert all(c.tokens == count_tokens(c.text) <= size for c in counted)


def test_oversized_paragraph_is_cut_at_sentence_ends():
    sentences = [f"Sentence number {i} tells a little more of the long story." for i in range(200)]
    paragraph = " ".join(sentences)
    text = "A short opening paragraph.\n\n" + paragraph + "\n\nA closing paragraph."
    chunks = chunk_text(text, 100)
    assert all(count_tokens(c) <= 100 for c in chunks)
    assert " ".join(chunks).split() == text.split()
    for chunk in chunks:
        assert chunk.rstrip().endswith(".")  # every cut falls after a full stop
    assert len(chunks) > 20


def test_sentence_longer_than_a_chunk_is_cut_at_spaces_then_characters():
    giant = " ".join(f"word{i}" for i in range(3000)) + "."
    chunks = chunk_text(giant, 64)
    assert all(count_tokens(c) <= 64 for c in chunks)
    assert " ".join(chunks).split() == giant.split()
    no_spaces = "很" * 3000
    chunks = chunk_text(no_spaces, 100)
    assert all(count_tokens(c) <= 100 for c in chunks) and "".join(chunks) == no_spaces


def test_chinese_text_and_small_inputs():
    zh = "他走了很远很远的路，终于到了海边。" * 300
    chunks = chunk_text(zh, 120)
    assert all(count_tokens(c) <= 120 for c in chunks) and "".join(chunks) == zh
    assert all(c.endswith("。") for c in chunks)
    assert chunk_text("Just one line.", 2048) == ["Just one line."]
    assert chunk_text("\n\n  \n", 2048) == []
    with pytest.raises(ValueError):
        chunk_text("text", 0)


def test_custom_token_counter():
    text = "\n\n".join(" ".join(["w"] * 30) for _ in range(10))
    chunks = chunk_text(text, 100, count_tokens=lambda s: len(s.split()))
    assert [len(c.split()) for c in chunks] == [90, 90, 90, 30]
