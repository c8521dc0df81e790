"""Each built-in kind's result model describes exactly what its `run()` returns: real runs
against the fake model server (one per main branch) validate, and dump back to the same JSON
(keys a branch leaves out stay out; keys given as null stay null)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pydantic
import pytest

from agents import agentwrite, booookscore, chat, summarize
from agents.agentwrite import WriteParams
from agents.chat import ChatParams
from agents.context import JobContext, MemoryJobServices, MemoryStepStore
from agents.gutenberg import strip_gutenberg
from agents.kinds import JobKind, Score, get_kind
from agents.llm.openai_pool import OpenAIPool
from agents.llm.types import GenOptions, LLMResult
from agents.settings import Settings
from tests.test_summarize import first_words

BOOK_PATH = Path(__file__).resolve().parent / "data" / "pride_and_prejudice.txt"
SUMMARY = (
    "Elizabeth Bennet lives with her parents and four sisters at Longbourn. "
    "Mr. Bingley, a rich young man, rents the nearby estate of Netherfield. "
    "He brings his friend Mr. Darcy, whose pride offends Elizabeth at a ball. "
    "She later marries him."
)


def assert_round_trip(kind: JobKind, result: dict[str, Any]) -> pydantic.BaseModel:
    """The result validates, and dumps (as the runtime stores it) to the very JSON run() gave."""
    original = json.loads(json.dumps(result))
    model = kind.validate_result(result)
    assert model.model_dump(mode="json", exclude_none=False) == original
    # A result read back from the database validates and dumps the same way.
    assert kind.validate_result(original).model_dump(mode="json") == original
    return model


@pytest.fixture
async def pool(fake_llm):
    client = OpenAIPool([fake_llm.base_url], context_window=8192)
    yield client
    await client.aclose()


@pytest.fixture(scope="module")
def book_text() -> str:
    return strip_gutenberg(BOOK_PATH.read_text(encoding="utf-8"))




def test_builtin_kinds_are_declared_in_their_modules():
    for name, module in (("chat", chat), ("write", agentwrite), ("summarize", summarize), ("booookscore", booookscore)):
        kind = get_kind(name)
        assert kind is module.KIND and kind.version >= 1
        assert kind.describe()["result_schema"]["additionalProperties"] is False
    assert get_kind("chat").view.text == "text"
    assert (get_kind("write").view.text, get_kind("write").view.plan) == ("text", "plan")
    assert (get_kind("summarize").view.text, get_kind("summarize").view.tree) == ("summary", "tree")
    assert get_kind("booookscore").view.flagged == "flagged" and get_kind("booookscore").view.text is None


# ----- chat ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("schema", [None, {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}])
async def test_chat(pool, schema):
    params = ChatParams(messages=[{"role": "user", "content": "Say something short."}], max_tokens=64, json_schema=schema)
    result = await chat.run(JobContext(pool), params)
    assert ("json" in result) == (schema is not None)
    model = assert_round_trip(chat.KIND, result)
    assert chat.KIND.scores(model) == [] and chat.KIND.main_text(result) == result["text"]


# ----- write --------------------------------------------------------------------------------------

def write_ctx(llm, judge=None) -> JobContext:
    return JobContext(llm, store=MemoryStepStore(), settings=Settings(max_target_words=50_000), judge=judge)


@pytest.mark.parametrize(
    "params",
    [
        {"instruction": "Write a travel guide to Kyoto.", "target_words": 1200},  # a model plan
        {"instruction": "Write a 300-word poem about tea."},  # one section, planned in code
        {"instruction": "Write about rivers.", "target_words": 800, "method": "single"},
        {"instruction": "写一篇关于故乡的散文。", "target_words": 300, "method": "single"},
    ],
)
async def test_write_without_a_judge(pool, params):
    result = await agentwrite.run(write_ctx(pool), WriteParams(**params))
    assert result["scores"]["quality_status"] == "not_configured"
    model = assert_round_trip(agentwrite.KIND, result)
    assert [s.metric for s in agentwrite.KIND.scores(model)] == ["S_l", "S_q", "S"]
    assert agentwrite.KIND.scores(model)[1] == Score("S_q", None)


@pytest.mark.parametrize("method,target", [("agentwrite", 1200), ("single", 500)])
async def test_write_with_a_judge(pool, method, target):
    result = await agentwrite.run(write_ctx(pool, judge=pool), WriteParams(instruction="Write a story.", target_words=target, method=method))
    assert result["scores"]["quality_status"] == "scored" and result["method"] == method
    model = assert_round_trip(agentwrite.KIND, result)
    s_l, s_q, s = agentwrite.KIND.scores(model)
    assert s_q == Score("S_q", result["scores"]["S_q"]) and s.value == pytest.approx((s_l.value + s_q.value) / 2)


async def test_write_judge_not_requested_and_missing(fake_llm_factory, pool):
    off = await agentwrite.run(write_ctx(pool, judge=pool), WriteParams(instruction="Write a poem.", target_words=200, judge=False))
    assert off["scores"]["quality_status"] == "not_requested"
    assert_round_trip(agentwrite.KIND, off)
    # A judge whose context cannot hold the piece and its verdict: the quality is "missing".
    small_judge = OpenAIPool([fake_llm_factory(max_model_len=1100).base_url], context_window=1100)
    try:
        missing = await agentwrite.run(write_ctx(pool, judge=small_judge), WriteParams(instruction="Write a poem.", target_words=200))
    finally:
        await small_judge.aclose()
    assert missing["scores"]["quality_status"] == "missing" and missing["scores"]["quality_error"]
    assert_round_trip(agentwrite.KIND, missing)


# ----- summarize ----------------------------------------------------------------------------------

def summarize_ctx(llm, text: str, judge=None) -> JobContext:
    return JobContext(llm, store=MemoryStepStore(), judge=judge, services=MemoryJobServices(documents={"d": text}))


def optional_node_keys(result: dict[str, Any]) -> set[str]:
    return {k for n in result["tree"]["nodes"] for k in n} & {"tokens", "problem", "chunk", "context", "kind", "final"}


@pytest.mark.parametrize(
    "words,params,node_keys",
    [
        # Three levels: chunk nodes, two level-1 merges (the second with the first as context),
        # the final merge, revisions.
        (5000, {"method": "hierarchical", "chunk_size": 256, "target_words": 300},
         {"tokens", "problem", "chunk", "context", "kind", "final"}),
        (2500, {"method": "hierarchical", "merge_context": False}, {"tokens", "problem", "chunk", "kind", "final"}),
        # One chunk: its summary is the final one (no merge, no "final" key).
        (300, {"method": "hierarchical", "chunk_size": 1024}, {"tokens", "problem", "chunk", "kind"}),
        (2500, {"method": "incremental"}, {"tokens", "problem", "chunk", "kind"}),
    ],
)
async def test_summarize(pool, book_text, words, params, node_keys):
    params = {"document_id": "d", "chunk_size": 512, "target_words": 100, "length_samples": 2, **params}
    result = await summarize.run(summarize_ctx(pool, first_words(book_text, words)), params)
    # In a hierarchical tree only revisions have a "kind", and whether the final summary needs
    # one depends on the lengths the model writes.
    assert node_keys - {"kind"} <= optional_node_keys(result) <= node_keys
    assert "booookscore" not in result
    assert ("sequential_merges" in result) == (params["method"] == "hierarchical")
    model = assert_round_trip(summarize.KIND, result)
    assert summarize.KIND.scores(model) == [] and summarize.KIND.main_text(result) == result["summary"]


@pytest.mark.parametrize("method,mode", [("hierarchical", "per_sentence"), ("incremental", "batched")])
async def test_summarize_scored(pool, book_text, method, mode):
    params = {"document_id": "d", "method": method, "chunk_size": 512, "target_words": 60, "score": True,
              "score_mode": mode, "length_samples": 2}
    text = first_words(book_text, 1200)
    skipped = await summarize.run(summarize_ctx(pool, text), params)
    assert set(skipped["booookscore"]) == {"skipped"}
    assert summarize.KIND.scores(assert_round_trip(summarize.KIND, skipped)) == []

    result = await summarize.run(summarize_ctx(pool, text, judge=pool), params)
    assert result["booookscore"]["mode"] == mode and "source" not in result["booookscore"]
    model = assert_round_trip(summarize.KIND, result)
    assert summarize.KIND.scores(model) == [Score("booookscore", result["booookscore"]["score"], {"mode": mode})]


class Rambler:
    """A model that never stops by itself, so every incremental update overflows and is redone
    after compressing the summary (compress nodes in the tree)."""

    model_name, context_window = "rambler", 8192

    async def chat(self, messages, options: GenOptions | None = None) -> LLMResult:
        words = " ".join(f"Sentence {i} of a story that goes on and on." for i in range(options.max_tokens)).split()
        return LLMResult(text=" ".join(words[: options.max_tokens]), finish_reason="length", prompt_tokens=100,
                         completion_tokens=options.max_tokens, latency_s=0.0)

    async def count_tokens(self, text: str) -> int:
        return len(text.split())

    async def aclose(self) -> None:
        pass


async def test_summarize_incremental_with_compressions(book_text):
    params = {"document_id": "d", "method": "incremental", "chunk_size": 512, "target_words": 60}
    result = await summarize.run(summarize_ctx(Rambler(), first_words(book_text, 1000)), params)
    kinds = {n.get("kind") for n in result["tree"]["nodes"]}
    assert result["compressions"] > 0 and {"update", "compress"} <= kinds
    assert_round_trip(summarize.KIND, result)


# ----- booookscore --------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["per_sentence", "batched"])
async def test_booookscore(pool, mode):
    result = await booookscore.run(JobContext(pool, judge=pool), {"summary": SUMMARY, "mode": mode, "batch_size": 3})
    assert result["score"] is not None
    model = assert_round_trip(booookscore.KIND, result)
    assert booookscore.KIND.scores(model) == [Score("booookscore", result["score"], {"mode": mode})]


async def test_booookscore_from_a_document_with_no_verdict(pool):
    # Asked for the paper's text format, the fake server answers prose: nothing parses, the
    # score is null (and still recorded as the metric's value).
    ctx = JobContext(pool, services=MemoryJobServices(documents={"doc": SUMMARY}))
    result = await booookscore.run(ctx, {"document_id": "doc", "output": "text"})
    assert result["score"] is None and result["source"] == "document doc" and result["judge"] == "llm"
    model = assert_round_trip(booookscore.KIND, result)
    assert booookscore.KIND.scores(model) == [Score("booookscore", None, {"mode": "per_sentence"})]


# ----- drift is caught ----------------------------------------------------------------------------

def test_a_result_that_drifts_does_not_validate():
    ok = {"text": "hi", "finish_reason": "stop", "model": "m", "usage": {"prompt_tokens": 1, "completion_tokens": 2}}
    chat.KIND.validate_result(ok)
    for bad in ({**ok, "extra": 1}, {k: v for k, v in ok.items() if k != "model"},
                {**ok, "usage": {"prompt_tokens": 1}}):
        with pytest.raises(pydantic.ValidationError):
            chat.KIND.validate_result(bad)
    with pytest.raises(pydantic.ValidationError):
        booookscore.KIND.validate_result({"skipped": "no judge"})
