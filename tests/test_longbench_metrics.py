"""LongBench-Write S_l and S_q: formula reference points, strict verdicts, aggregation."""
from __future__ import annotations

import json

import pytest

from agents.llm.types import GenOptions, LLMResult
from agents.metrics.longbench_write import (
    JUDGE_SCHEMA,
    QUALITY_DIMENSIONS,
    aggregate_quality,
    item_quality_score,
    judge_quality,
    length_score,
    overall_score,
    verdict_ratings,
)


@pytest.mark.parametrize("produced,score", [
    (1000, 100.0), (1500, 100 * (1 - 0.5 / 3)), (2000, 100 * (1 - 1 / 3)), (2500, 50.0), (4000, 0.0), (9000, 0.0),
    (800, 87.5), (500, 50.0), (334, 100 * (1 - (1000 / 334 - 1) / 2)), (333, 0.0), (1, 0.0), (0, 0.0),
])
def test_length_score_reference_points(produced, score):
    assert length_score(produced, 1000) == pytest.approx(score)


def test_length_score_rejects_bad_required():
    with pytest.raises(ValueError):
        length_score(10, 0)


GOOD = {"Analysis": "ok", "Relevance": 5, "Accuracy": 4, "Coherence": 3, "Clarity": 2,
        "Breadth and Depth": 1, "Reading Experience": 5}


def test_verdict_ratings_are_strict():
    assert verdict_ratings(GOOD)["Coherence"] == 3
    for bad in ({**GOOD, "Clarity": 6}, {**GOOD, "Clarity": 0}, {**GOOD, "Clarity": "4"},
                {**GOOD, "Clarity": 4.5}, {**GOOD, "Clarity": True}, {k: v for k, v in GOOD.items() if k != "Clarity"},
                ["not", "a", "dict"]):
        with pytest.raises(ValueError):
            verdict_ratings(bad)


def test_aggregation_maps_means_and_excludes_missing():
    a = {d: 5 for d in QUALITY_DIMENSIONS}
    b = {d: 3 for d in QUALITY_DIMENSIONS}
    agg = aggregate_quality([a, None, b, None])
    assert agg["scored"] == 2 and agg["missing"] == 2
    assert agg["dimensions"]["Relevance"] == pytest.approx((4 - 1) * 25)
    assert agg["S_q"] == pytest.approx(75.0)
    assert item_quality_score(a) == 100.0 and item_quality_score(b) == 50.0
    assert aggregate_quality([None]) == {"S_q": None, "dimensions": None, "scored": 0, "missing": 1}
    assert overall_score(80.0, 60.0) == 70.0 and overall_score(80.0, None) is None


class Judge:
    model_name = "judge"

    def __init__(self, replies, context_window=8192):
        self.replies = list(replies)
        self.context_window = context_window
        self.calls = []

    async def chat(self, messages, options=None):
        self.calls.append((messages, options))
        return LLMResult(text=self.replies.pop(0), finish_reason="stop", prompt_tokens=5, completion_tokens=5, latency_s=0)

    async def count_tokens(self, text):
        return len(text.split())


async def test_judge_retries_then_scores():
    judge = Judge(["not json", "```json\n" + json.dumps(GOOD) + "\n```"])
    out = await judge_quality(judge, "Write a poem", "Roses are red.")
    assert out["status"] == "scored" and out["ratings"]["Relevance"] == 5
    assert out["S_q"] == pytest.approx(item_quality_score(verdict_ratings(GOOD)))
    messages, options = judge.calls[0]
    assert options.json_schema == JUDGE_SCHEMA and options.temperature == 0.5 and options.max_tokens == 1024
    assert "Write a poem" in messages[0]["content"] and "Roses are red." in messages[0]["content"]


async def test_judge_never_parsing_is_missing():
    judge = Judge([json.dumps({**GOOD, "Clarity": 7})] * 5)
    out = await judge_quality(judge, "Write", "Text")
    assert out == {"status": "missing", "error": out["error"]} and "StructuredOutputError" in out["error"]
    assert len(judge.calls) == 5


async def test_judge_response_too_long_is_missing():
    judge = Judge([], context_window=500)
    out = await judge_quality(judge, "Write", "word " * 1000)
    assert out["status"] == "missing" and "too long" in out["error"] and judge.calls == []
