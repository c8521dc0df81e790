"""Target lengths read from instructions (English and Chinese, incl. Chinese numerals)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from agents.length_target import find_length_mentions, parse_chinese_number, parse_number, parse_target_words

LONGBENCH = Path(__file__).resolve().parent.parent / "agents" / "evaldata" / "longbench_write.jsonl"


@pytest.mark.parametrize("text,words", [
    ("Write about 3000 words on the Roman Empire", 3000),
    ("The content should be no less than 200 words.", 200),
    ("Write a 1,500-word essay", 1500),
    ("a five-hundred-word essay", 500),
    ("write two thousand words about rain", 2000),
    ("Write 10k words", 10_000),
    ("between 800 and 1000 words", 1000),
    ("5000字", 5000),
    ("写一篇五千字的小说", 5000),
    ("三千字开题报告", 3000),
    ("扩写到八百字", 800),
    ("一万字", 10_000),
    ("一万五千字", 15_000),
    ("1.5万字的报告", 15_000),
    ("字数要求：2000左右", 2000),
    ("字数要求100至200字。", 200),
    ("300到400字", 400),
    ("写一篇300词的英语作文", 300),
    ("创作五篇日记。在日本行程5天，每天一篇。每篇400字左右。", 2000),
    ("分两部分写，各写1000字", 2000),
    ("Write 3 short stories of about 500 words each.", 1500),
    ("Write a 50-page novel", 10_000),
    # The last mention wins: earlier numbers belong to material.
    ("Summarize this 300-word note. Then write a 2000-word essay.", 2000),
])
def test_parses_lengths(text, words):
    assert parse_target_words(text) == words


@pytest.mark.parametrize("text", ["Write a poem", "十字路口的故事", "in a word, be brief", "出10道单选题",
                                  "2024-2025年的计划", "月活50万"])
def test_no_length(text):
    assert parse_target_words(text) is None


def test_numbers():
    assert parse_chinese_number("三千五百") == 3500
    assert parse_chinese_number("一万五") == 15_000
    assert parse_chinese_number("两百") == 200
    assert parse_chinese_number("十五") == 15
    assert parse_chinese_number("四百零八") == 408 and parse_chinese_number("三千零五") == 3005  # 零: the next digit is units
    assert parse_chinese_number("abc") is None
    assert parse_number("3,000") == 3000 and parse_number("1.5k") == 1500 and parse_number("two thousand") == 2000
    assert parse_number("a hundred") == 100 and parse_number("a") is None


def test_mentions_carry_kind_and_span():
    text = "写五篇日记，每篇400字"
    (m,) = find_length_mentions(text)
    assert m.kind == "each" and m.words == 2000 and text[m.start:m.end] == "400字"


def test_longbench_write_prompts():
    """117 of the 120 hand-annotated lengths are read exactly; the other 3 state no length."""
    rows = [json.loads(line) for line in LONGBENCH.read_text(encoding="utf-8").splitlines() if line.strip()]
    parsed = [(parse_target_words(r["prompt"]), r["length"]) for r in rows]
    wrong = [(p, want) for p, want in parsed if p is not None and p != want]
    assert wrong == []
    assert sum(1 for p, want in parsed if p == want) >= 117
