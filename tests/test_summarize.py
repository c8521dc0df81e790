"""Book summarization: budgets (pure), both methods on Pride and Prejudice against the fake
vLLM server, replay and resume after a crash, length control, errors; and the embedded
model on a shorter text (marker `model`)."""
from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pydantic
import pytest

from agents import summarize
from agents.chunking import chunk_text
from agents.context import JobContext, MemoryJobServices, MemoryStepStore
from agents.gutenberg import strip_gutenberg
from agents.llm.openai_pool import OpenAIPool
from agents.llm.types import GenOptions, LLMError, LLMResult, LLMServerError
from agents.summarize import budgets as B
from agents.summarize.hierarchical import merge_template_tokens
from agents.text import count_words

BOOK_PATH = Path(__file__).resolve().parent / "data" / "pride_and_prejudice.txt"


@pytest.fixture(scope="module")
def book() -> str:
    return BOOK_PATH.read_text(encoding="utf-8")


def first_words(text: str, n: int) -> str:
    """The first paragraphs of `text` holding about n words."""
    out, total = [], 0
    for para in text.split("\n\n"):
        out.append(para)
        total += len(para.split())
        if total >= n:
            break
    return "\n\n".join(out)


def make_ctx(client: Any, text: str, store: MemoryStepStore | None = None, **kw: Any) -> JobContext:
    return JobContext(client, store=store or MemoryStepStore(), services=AnyDocument(text), **kw)


class AnyDocument(MemoryJobServices):
    """Every document id reads as the same text."""

    def __init__(self, text: str):
        super().__init__()
        self.text = text

    async def load_document(self, document_id: str) -> str:
        return self.text


def pool_for(server, **kw: Any) -> OpenAIPool:
    return OpenAIPool([server.base_url], context_window=8192, **kw)


def tree_chunk_coverage(result: dict[str, Any]) -> list[int]:
    """Chunk indices reached from the root, with repetitions; asserts every child exists and
    no node is reached twice."""
    nodes = {n["id"]: n for n in result["tree"]["nodes"]}
    seen: set[str] = set()
    chunks: list[int] = []
    stack = [result["tree"]["root"]]
    while stack:
        node_id = stack.pop()
        assert node_id in nodes, f"{node_id} missing from the tree"
        assert node_id not in seen, f"{node_id} reached twice"
        seen.add(node_id)
        node = nodes[node_id]
        if node.get("chunk") is not None:
            chunks.append(node["chunk"])
        stack.extend(node["children"])
    return chunks


def settled_request_count(server) -> int:
    count = server.stats()["generation_requests"]
    while True:
        time.sleep(0.3)
        again = server.stats()["generation_requests"]
        if again == count:
            return count
        count = again


def within_10_percent(result: dict[str, Any]) -> bool:
    return abs(result["word_count"] - result["target_words"]) <= 0.1 * result["target_words"]


# ----- budgets (pure) ----------------------------------------------------------------------------

def test_levels_and_limits_for_a_book():
    usable = B.usable_context(8192)
    assert usable == 6963
    tmpl = merge_template_tokens()
    # 82 chunks of 2048 tokens in an 8K context: 82 -> 28 -> 2 -> 1, three levels (0, 1, 2).
    assert B.estimate_levels(82, usable, 2048, tmpl) == 3
    assert B.level_limits(B.tokens_for_words(600), 3) == [390, 601, 924]
    assert [B.words_for(t) for t in (390, 601, 924)] == [254, 391, 601]
    # Few chunks: one round of the estimate, so chunk summaries get the top limit too.
    assert B.estimate_levels(1, usable, 2048, tmpl) == 1
    assert B.estimate_levels(3, usable, 2048, tmpl) == 1
    assert B.estimate_levels(4, usable, 2048, tmpl) == 2
    # A 128K context takes every chunk summary of the book in one merge.
    assert B.estimate_levels(82, B.usable_context(128_000), 2048, tmpl) == 2


def test_packing_is_greedy_and_counts_the_context():
    assert B.pack_groups([100] * 10, 350) == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    assert B.pack_groups([100] * 5, 350, context_sizes=[0, 100, 100]) == [[0, 1, 2], [3, 4]]
    assert B.pack_groups([500, 100], 350) == [[0], [1]]  # too big alone: a group of its own


def test_plans_reject_sizes_that_cannot_fit():
    with pytest.raises(B.BudgetError, match="chunk_size"):
        B.plan_hierarchical(82, 8192, 8000, 600, 300, 330)
    with pytest.raises(B.BudgetError, match="target_words"):
        B.plan_hierarchical(82, 8192, 2048, 4000, 300, 330)
    plan = B.plan_hierarchical(82, 8192, 2048, 600, 300, merge_template_tokens())
    assert plan.limits == [390, 601, 924] and plan.top_tokens == 924
    assert plan.merge_budget(1) > 4 * 390  # a merge takes many level-0 summaries
    B.plan_incremental(8192, 2048, 600, 400)
    with pytest.raises(B.BudgetError, match="incremental"):
        B.plan_incremental(8192, 5000, 600, 400)


def test_params_validation():
    p = summarize.SummarizeParams(document_id="d")
    assert (p.method, p.chunk_size, p.target_words, p.merge_context, p.length_samples) == (
        "hierarchical", 2048, 600, True, 3
    )
    for bad in ({"document_id": "d", "chunk_size": 100}, {"document_id": "d", "method": "other"},
                {"document_id": "d", "target_words": 10}, {"document_id": ""}, {"document_id": "d", "x": 1}):
        with pytest.raises(pydantic.ValidationError):
            summarize.SummarizeParams(**bad)


# ----- the whole book against the fake server ----------------------------------------------------

@pytest.mark.parametrize("method", ["hierarchical", "incremental"])
async def test_pride_and_prejudice_end_to_end_with_replay(fake_llm, book, method):
    pool = pool_for(fake_llm)
    store = MemoryStepStore()
    params = {"document_id": "pp", "method": method, "strip_gutenberg": True}
    try:
        result = await summarize.run(make_ctx(pool, book, store), params)
        calls_made = fake_llm.stats()["generation_requests"]

        n = len(chunk_text(strip_gutenberg(book), 2048))
        assert result["chunks"] == n == 82 and result["method"] == method
        assert sorted(tree_chunk_coverage(result)) == list(range(n))  # every chunk exactly once
        assert within_10_percent(result) and result["length_ok"]
        assert result["word_count"] == count_words(result["summary"])
        # Every tree node is a stored step, and the call count matches what the server saw.
        assert all(n["id"] in store.outputs for n in result["tree"]["nodes"])
        assert result["calls"] == calls_made == sum(u.calls for u in store.usage.values())
        if method == "hierarchical":
            assert [lv["level"] for lv in result["levels"]] == [0, 1, 2]
            assert result["levels"][0]["nodes"] == n and result["levels"][-1]["nodes"] == 1
            merges = [nd for nd in result["tree"]["nodes"] if nd["id"].startswith("merge/1/")]
            assert len(merges) >= 2 and all(len(m["children"]) >= 2 for m in merges)
            assert all("context" in m for m in merges if m["id"] != "merge/1/0")
        else:
            assert result["updates"] == n
            assert [nd["chunk"] for nd in result["tree"]["nodes"] if nd.get("kind") == "update"] == list(range(n))

        # Replay: the same store answers every step; the model is not called again.
        again = await summarize.run(make_ctx(pool, book, store), params)
        assert fake_llm.stats()["generation_requests"] == calls_made
        assert again["summary"] == result["summary"] and again["tree"] == result["tree"]
        assert again["calls"] == result["calls"]
    finally:
        await pool.aclose()


# ----- resume after a crash ----------------------------------------------------------------------

class FailAfter:
    """Delegates to a real client for the first `limit` calls; every later call fails, once
    those first calls have finished (so the crash lands after them, as in a real outage)."""

    def __init__(self, inner, limit: int):
        self.inner, self.limit, self.calls, self.completed = inner, limit, 0, 0
        self.first_done = asyncio.Event()

    model_name = property(lambda self: self.inner.model_name)
    context_window = property(lambda self: self.inner.context_window)

    async def chat(self, messages, options: GenOptions | None = None) -> LLMResult:
        self.calls += 1
        if self.calls > self.limit:
            await self.first_done.wait()
            raise LLMServerError("injected crash")
        try:
            return await self.inner.chat(messages, options)
        finally:
            self.completed += 1
            if self.completed == self.limit:
                self.first_done.set()

    async def complete(self, prompt, options=None):
        raise NotImplementedError

    async def count_tokens(self, text: str) -> int:
        return await self.inner.count_tokens(text)

    async def aclose(self) -> None:
        pass


class KeyLog(MemoryStepStore):
    def __init__(self) -> None:
        super().__init__()
        self.finished_keys: list[str] = []

    async def finished(self, key, output, usage) -> None:
        self.finished_keys.append(key)
        await super().finished(key, output, usage)


@pytest.mark.parametrize("method,where", [("hierarchical", "level0"), ("hierarchical", "merge"), ("incremental", "updates")])
async def test_resume_after_crash_runs_only_missing_nodes(fake_llm, book, method, where):
    text = first_words(strip_gutenberg(book), 30_000)
    params = {"document_id": "pp", "method": method, "chunk_size": 512, "target_words": 300}
    pool = pool_for(fake_llm)
    try:
        clean_store = MemoryStepStore()
        clean = await summarize.run(make_ctx(pool, text, clean_store), params)
        n_chunks = clean["chunks"]
        if method == "hierarchical":
            assert clean["levels"][1]["nodes"] >= 3  # several merges at level 1
        # Mid level 0; or right after the first level-1 merge (the fake meets "at most" limits
        # at once, so each chunk summary is one call); or a third of the way through the updates.
        crash_after = n_chunks + 1 if where == "merge" else n_chunks // 3

        store = KeyLog()
        with pytest.raises(LLMServerError):
            await summarize.run(make_ctx(FailAfter(pool, crash_after), text, store), params)
        first_run = set(store.finished_keys)
        assert 0 < len(first_run) < len(clean_store.outputs)
        if where == "merge":
            assert "merge/1/0" in first_run and "merge/1/1" not in first_run
            assert all(f"chunk/0/{i}" in first_run for i in range(n_chunks))
        if where == "level0":
            assert not any(k.startswith("merge/") for k in first_run)

        store.finished_keys.clear()
        before = settled_request_count(fake_llm)  # requests cut off by the crash may still arrive
        resumed = await summarize.run(make_ctx(pool, text, store), params)
        second_run = set(store.finished_keys)
        assert not first_run & second_run  # nothing done twice
        assert first_run | second_run == set(clean_store.outputs)  # the same nodes as a clean run
        assert fake_llm.stats()["generation_requests"] - before == sum(
            store.usage[k].calls for k in second_run
        )
        # Deterministic inputs: the resumed job writes exactly what the clean one did.
        assert resumed["summary"] == clean["summary"] and resumed["tree"] == clean["tree"]
    finally:
        await pool.aclose()


# ----- length control, budgets and errors --------------------------------------------------------

async def test_noisy_lengths_are_brought_within_target(fake_llm_factory, book):
    server = fake_llm_factory(length_noise=0.6)
    text = first_words(strip_gutenberg(book), 8_000)
    pool = pool_for(server)
    try:
        for method in ("hierarchical", "incremental"):
            store = MemoryStepStore()
            result = await summarize.run(
                make_ctx(pool, text, store),
                {"document_id": "d", "method": method, "chunk_size": 1024, "target_words": 300},
            )
            assert within_10_percent(result) and result["length_ok"], result["word_count"]
            samples = [s for out in store.outputs.values() for s in out.get("samples", [])]
            # The model really missed: some answers were far from what they were asked for.
            assert any(abs(s["words"] - s["asked"]) > 0.1 * s["asked"] for s in samples)
    finally:
        await pool.aclose()


async def test_a_model_that_cannot_write_long_enough_is_reported(fake_llm_factory, book):
    server = fake_llm_factory(natural_min_words=150, natural_max_words=200)
    text = first_words(strip_gutenberg(book), 3_000)
    pool = pool_for(server)
    try:
        result = await summarize.run(
            make_ctx(pool, text), {"document_id": "d", "chunk_size": 1024, "target_words": 600}
        )
        assert result["word_count"] <= 200 and not result["length_ok"]
        assert len([n for n in result["tree"]["nodes"] if n["id"].startswith("revise/")]) == 6
    finally:
        await pool.aclose()


class Rambler:
    """A model that never stops by itself: every answer runs to max_tokens."""

    model_name, context_window = "rambler", 8192

    def __init__(self) -> None:
        self.calls = 0

    async def chat(self, messages, options: GenOptions | None = None) -> LLMResult:
        self.calls += 1
        text = " ".join(f"Sentence {i} of a story that goes on and on." for i in range(options.max_tokens))
        words = text.split()[: options.max_tokens]  # about a token per word: cut at max_tokens
        return LLMResult(text=" ".join(words), finish_reason="length", prompt_tokens=100,
                         completion_tokens=options.max_tokens, latency_s=0.0)

    async def complete(self, prompt, options=None):
        raise NotImplementedError

    async def count_tokens(self, text: str) -> int:
        return len(text.split())

    async def aclose(self) -> None:
        pass


async def test_a_rambling_answer_is_cut_to_its_limit_after_two_tries():
    from agents.summarize.nodes import generate, within_tokens

    model = Rambler()
    ctx = make_ctx(model, "")
    limit = 120

    async def node() -> dict[str, Any]:
        return await generate(ctx, "chunk/0/0", lambda w: f"Summarize in at most {w} words.", 78,
                              B.output_cap(limit), within_tokens(limit), repair_limit=limit)

    out = await ctx.step("chunk/0/0", node)
    assert model.calls == 2 and out["calls"] == 2 and out["repaired"] and out["problem"] is None
    assert out["tokens"] <= limit and out["text"].endswith("on and on.")
    # Without repair (the reference's rule), all six tries are spent and the problem is kept.
    model.calls = 0
    out = await generate(ctx, "k", lambda w: f"at most {w} words", 78, B.output_cap(limit), within_tokens(limit))
    assert model.calls == 6 and out["problem"] == "cut off at max_tokens" and out["text"].endswith(".")


async def test_room_for_answer_counts_only_prompts_near_the_limit():
    from agents.summarize.nodes import room_for_answer

    class Counting(Rambler):
        counted = 0

        async def count_tokens(self, text: str) -> int:
            self.counted += 1
            return len(text.split())

    model = Counting()
    near = [{"role": "user", "content": "word " * 6000}]
    # Far from the limit by the caller's estimate: max_tokens as asked, nothing counted.
    assert await room_for_answer(model, near, 500, prompt_tokens=1000) == 500 and model.counted == 0
    # Near it (estimated or counted here): the model's count decides the room.
    room = await room_for_answer(model, near, 3000, prompt_tokens=6000)
    assert model.counted == 1 and room < 3000
    assert await room_for_answer(model, near, 3000) == room and model.counted == 2


async def test_incremental_with_a_rambling_model_stays_bounded(book):
    model = Rambler()
    text = first_words(strip_gutenberg(book), 1_500)
    result = await summarize.run(
        make_ctx(model, text), {"document_id": "d", "method": "incremental", "chunk_size": 512, "target_words": 100}
    )
    n = result["chunks"]
    assert n >= 3 and sorted(tree_chunk_coverage(result)) == list(range(n))
    assert result["compressions"] == n - 1  # every update overflowed and was repaired
    # First chunk: 2 tries; each later update: the update, then two compress + redo attempts
    # (the second redo is cut to the cap); the last update samples 3 at a time; revisions.
    assert model.calls == result["calls"] <= 2 + 5 * (n - 2) + 3 * 5 + 6 * 3 * 3
    assert within_10_percent(result)


async def test_single_chunk_document_and_no_merge_context(fake_llm, book):
    pool = pool_for(fake_llm)
    try:
        short = first_words(strip_gutenberg(book), 600)
        result = await summarize.run(make_ctx(pool, short), {"document_id": "d", "target_words": 150})
        assert result["chunks"] == 1 and result["levels"][0]["nodes"] == 1
        assert tree_chunk_coverage(result) == [0] and within_10_percent(result)

        text = first_words(strip_gutenberg(book), 12_000)
        result = await summarize.run(
            make_ctx(pool, text),
            {"document_id": "d", "chunk_size": 512, "target_words": 300, "merge_context": False},
        )
        assert sorted(tree_chunk_coverage(result)) == list(range(result["chunks"]))
        assert not any("context" in n for n in result["tree"]["nodes"])
        assert within_10_percent(result)
    finally:
        await pool.aclose()


async def test_chunk_size_too_big_for_the_context_fails_before_any_call(fake_llm, book):
    pool = pool_for(fake_llm)
    try:
        with pytest.raises(B.BudgetError, match="chunk_size"):
            await summarize.run(make_ctx(pool, book), {"document_id": "d", "chunk_size": 8000})
        assert fake_llm.stats()["generation_requests"] == 0
    finally:
        await pool.aclose()


async def test_model_errors_raise_and_store_no_text(fake_llm_factory, book):
    server = fake_llm_factory(error_rate=1.0)
    pool = pool_for(server, max_retries=0)
    store = MemoryStepStore()
    try:
        with pytest.raises(LLMError):
            await summarize.run(make_ctx(pool, first_words(book, 3000), store), {"document_id": "d"})
        assert set(store.outputs) <= {"plan/tokens"} and store.errors  # the token plan, no text
    finally:
        await pool.aclose()


async def test_empty_document_is_rejected(fake_llm):
    pool = pool_for(fake_llm)
    try:
        with pytest.raises(ValueError, match="no text"):
            await summarize.run(make_ctx(pool, "\n\n  \n"), {"document_id": "d"})
    finally:
        await pool.aclose()


async def test_score_after_summarizing(fake_llm, book):
    pool = pool_for(fake_llm)
    text = first_words(strip_gutenberg(book), 3_000)
    params = {"document_id": "d", "chunk_size": 1024, "target_words": 150, "score": True}
    try:
        result = await summarize.run(make_ctx(pool, text), params)
        assert "skipped" in result["booookscore"]  # no judge configured
        store = MemoryStepStore()
        result = await summarize.run(make_ctx(pool, text, store, judge=pool), params)
        score = result["booookscore"]
        assert score["judge"] == "judge" and score["mode"] == "per_sentence"
        assert score["sentences"] == len([k for k in store.outputs if k.startswith("booookscore/judge/")])
    finally:
        await pool.aclose()


# ----- the real embedded model -------------------------------------------------------------------

async def summarize_with_the_embedded_model(book: str, method: str, words: int, chunk_size: int) -> None:
    from agents.llm.factory import make_llm_client
    from agents.settings import Settings

    client = make_llm_client(Settings())
    text = first_words(strip_gutenberg(book), words)
    params = {"document_id": "d", "method": method, "chunk_size": chunk_size, "target_words": 150}
    try:
        result = await summarize.run(make_ctx(client, text), params)
    finally:
        await client.aclose()
    assert result["chunks"] > 2
    assert sorted(tree_chunk_coverage(result)) == list(range(result["chunks"]))
    assert result["summary"].strip() and within_10_percent(result), result["word_count"]


@pytest.mark.model
@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("method", ["hierarchical", "incremental"])
async def test_embedded_model_summarizes_six_thousand_words(book, method):
    """Both methods on the real model and tokenizer, in chunks, with merges or compression."""
    await summarize_with_the_embedded_model(book, method, 6_000, chunk_size=2048)


@pytest.mark.model
@pytest.mark.slow
@pytest.mark.long
# Prefill is most of the time: 30,000 model tokens of book per method. Where SmolLM2-135M
# prefills ~200 tokens/s on 2 cores each method takes 5-8 minutes; on a host half as fast
# (2026-12-01: 55-60 tokens/s at a 3,500-token prompt) 13 to over 15 minutes. Hence `long`,
# outside `make test`'s budget: run them with `make test-long`.
@pytest.mark.timeout(2400)
@pytest.mark.parametrize("method", ["hierarchical", "incremental"])
async def test_embedded_model_summarizes_twenty_thousand_words(book, method):
    await summarize_with_the_embedded_model(book, method, 20_000, chunk_size=3072)
