"""LongBench-Write S_l and S_q: formula reference points, strict verdicts, aggregation."""
from __future__ import annotations

from pathlib import Path
import json

import pytest

from agents.llm.types import LLMResult
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


# -- evaluation report ---------------------------------------------------------------------------------

from agents.evaluation import (  # noqa: E402
    PromptSetError,
    build_report,
    length_bin,
    load_prompt_set,
    render_table,
    run_prompt_set,
    summary_line,
    write_plot,
)


def test_load_prompt_set(tmp_path):
    items = load_prompt_set(Path(__file__).resolve().parent.parent / "agents" / "evaldata" / "longbench_write.jsonl")
    assert len(items) == 120 and items[0].length == 100 and items[0].index == 0
    assert [sum(1 for i in items if length_bin(i.length) == b) for b in ("[0,500)", "[500,2k)", "[2k,4k)", "[4k,20k]")] == [26, 36, 31, 27]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "length": 10}\n{oops\n\n{"prompt": "", "length": 5}\n{"prompt": "b", "length": 0}\n')
    with pytest.raises(PromptSetError) as err:
        load_prompt_set(bad)
    assert "line 2" in str(err.value) and "line 4" in str(err.value) and "line 5" in str(err.value)


async def test_run_prompt_set_builds_the_report(tmp_path):
    from agents.evaluation import EvalItem

    items = [EvalItem(0, "p0", "News", 100), EvalItem(1, "p1", "News", 1000),
             EvalItem(2, "p2", "Story", 3000), EvalItem(3, "p3", "Story", 8000)]

    async def run_item(item, method, protocol):
        if method == "single" and item.index == 3:
            raise RuntimeError("model down")
        words = item.length if method == "agentwrite" else item.length // 2
        status = "missing" if item.index == 1 else "scored"
        quality = {d: 4 if method == "agentwrite" else 2 for d in QUALITY_DIMENSIONS} if status == "scored" else None
        return {"word_count": words, "scores": {"quality_status": status, "quality": quality}}

    seen = []
    report = await run_prompt_set(items, run_item, ("agentwrite", "single"), concurrency=2, on_outcome=seen.append)
    assert len(seen) == 8
    aw, single = report["methods"]["agentwrite/controlled"], report["methods"]["single/controlled"]
    assert aw["overall"]["S_l"] == 100.0 and aw["overall"]["failed"] == 0
    assert single["overall"]["failed"] == 1 and single["overall"]["S_l"] == pytest.approx((50 * 3 + 0) / 4)
    assert aw["overall"]["judged"] == 3 and aw["overall"]["missing"] == 1 and aw["overall"]["S_q"] == 75.0
    assert single["overall"]["S_q"] == 25.0 and single["overall"]["judged"] == 2  # the failed item is not judged
    assert aw["overall"]["S"] == pytest.approx((100 + 75) / 2)
    assert single["by_length"]["[4k,20k]"] ["S_l"] == 0.0 and aw["by_length"]["[500,2k)"]["n"] == 1
    assert set(aw["by_type"]) == {"News", "Story"}
    table = render_table(report)
    assert "agentwrite" in table and "[2k,4k)" in table and "S_q by type" in table
    line = summary_line(report)
    assert json.loads(line) == {"agentwrite": {"protocol": "controlled", "S_l": 100.0, "S_q": 75.0, "S": 87.5},
                                "single": {"protocol": "controlled", "S_l": 37.5, "S_q": 25.0, "S": 31.25}}
    png, svg = write_plot(report, tmp_path / "eval.png"), write_plot(report, tmp_path / "eval.svg")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and b"<svg" in svg.read_bytes()[:500]
    with pytest.raises(ValueError):
        write_plot(report, tmp_path / "eval.pdf")


def test_report_without_judge_has_no_quality_columns():
    rows = [{"index": 0, "prompt": "p", "type": "T", "length": 100, "method": "agentwrite", "protocol": "paper", "word_count": 90,
             "S_l": 94.4, "quality": None, "quality_status": "not_configured", "error": None}]
    report = build_report(rows)
    assert json.loads(summary_line(report)) == {"agentwrite": {"protocol": "paper", "S_l": 94.4}}
    assert "S_q" not in render_table(report)
