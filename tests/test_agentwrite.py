"""AgentWrite: params, plan repair, section writing, resume, scoring (in-process fake client),
plus end-to-end runs through the fake vLLM server over HTTP."""
from __future__ import annotations

from pathlib import Path
import json
import re

import pytest
from pydantic import ValidationError

from agents import agentwrite
from agents.agentwrite import (
    EmptyModelOutput,
    WriteParams,
    distribute_budget,
    plan_bounds,
    repair_plan,
    resolve_language,
    strip_labels,
    trim_to_budget,
)
from agents.context import JobContext, ListEventSink, MemoryStepStore
from agents.llm.types import GenOptions, LLMResult
from agents.settings import Settings
from agents.text import count_words

_ASK = re.compile(r"(\d+)\s*(?:words|字)")


class ScriptedWriter:
    """Answers plan prompts with `plan_words` sections and text prompts with `factor` times
    the last "N words" asked for, in 50-word paragraphs (capped at `natural` words per call)."""

    model_name = "scripted"

    def __init__(self, plan_words=(400, 400, 400), factor=1.0, natural=10_000, context_window=8192,
                 fail_on_call=None, empty_on_call=None, verdict=None, truncate_first=False):
        self.plan_words = list(plan_words)
        self.factor = factor
        self.natural = natural
        self.context_window = context_window
        self.fail_on_call = fail_on_call
        self.empty_on_call = empty_on_call
        self.verdict = verdict
        self.truncate_first = truncate_first
        self.prompts: list[str] = []
        self.options: list[GenOptions] = []

    async def chat(self, messages, options=None):
        options = options or GenOptions()
        prompt = messages[-1]["content"]
        self.prompts.append(prompt)
        self.options.append(options)
        n = len(self.prompts)
        if self.fail_on_call == n:
            raise RuntimeError("server died")
        if options.json_schema and "sections" in options.json_schema.get("properties", {}):
            sections = [{"title": f"Part {i}", "main_point": f"point {i}", "words": w}
                        for i, w in enumerate(self.plan_words, 1)]
            return self._result(json.dumps({"sections": sections}))
        if options.json_schema:
            return self._result(json.dumps(self.verdict) if isinstance(self.verdict, dict) else str(self.verdict))
        if self.empty_on_call == n:
            return self._result("   ")
        asked = int(_ASK.findall(prompt)[-1])
        words = min(self.natural, max(1, round(asked * self.factor)))
        finish = "stop"
        if self.truncate_first and n == 2:
            words, finish = words // 2, "length"
        paragraphs, left = [], words
        while left > 0:
            k = min(50, left)
            paragraphs.append(" ".join(["word"] * (k - 1) + ["end."]))
            left -= k
        text = "\n\n".join(paragraphs)
        if finish == "length":
            text += " and then it was cut"
        return self._result(text, finish)

    def _result(self, text, finish="stop"):
        return LLMResult(text=text, finish_reason=finish, prompt_tokens=10, completion_tokens=len(text.split()),
                         latency_s=0.0, model=self.model_name)

    async def complete(self, prompt, options=None):
        return await self.chat([{"role": "user", "content": prompt}], options)

    async def count_tokens(self, text):
        return len(text.split())

    async def aclose(self):
        pass


def _ctx(llm, store=None, judge=None, events=None):
    return JobContext(llm, store=store or MemoryStepStore(), events=events or ListEventSink(),
                      settings=Settings(max_target_words=50_000), judge=judge)


# -- params ----------------------------------------------------------------------------------------


def test_params_reject_bad_input():
    with pytest.raises(ValidationError, match="instruction must not be empty"):
        WriteParams(instruction="   ")
    for bad in (0, -5):
        with pytest.raises(ValidationError, match="target_words must be between 1 and 100000"):
            WriteParams(instruction="Write", target_words=bad)
    with pytest.raises(ValidationError, match="between 1 and 5000"):
        WriteParams.model_validate({"instruction": "Write", "target_words": 6000},
                                   context={"max_target_words": 5000})
    with pytest.raises(ValidationError):
        WriteParams(instruction="Write", method="parallel")


async def test_run_checks_target_against_settings():
    llm = ScriptedWriter()
    with pytest.raises(ValueError, match="between 1 and 50000"):
        await agentwrite.run(_ctx(llm), WriteParams(instruction="Write", target_words=60_000))
    # A target read from the instruction is checked too.
    with pytest.raises(ValueError, match="between 1 and 50000"):
        await agentwrite.run(_ctx(llm), WriteParams(instruction="Write a 90000-word novel"))
    assert llm.prompts == []


def test_target_and_language_resolution():
    assert agentwrite.resolve_target(WriteParams(instruction="Write about 3000 words on Rome"), 10**5) == (3000, "instruction")
    assert agentwrite.resolve_target(WriteParams(instruction="写一篇五千字的小说"), 10**5) == (5000, "instruction")
    assert agentwrite.resolve_target(WriteParams(instruction="Write a poem", target_words=77), 10**5) == (77, "given")
    assert agentwrite.resolve_target(WriteParams(instruction="Write a poem"), 10**5) == (agentwrite.DEFAULT_TARGET_WORDS, "default")
    assert resolve_language("写一篇五千字的小说") == "zh"
    assert resolve_language("Write 300 words") == "en"
    assert resolve_language("帮我用英文写一篇关于郭沫若生平的文章，不少于4000字") == "en"
    assert resolve_language("Write a 800 words Chinese news for CEVA") == "zh"
    assert resolve_language("Write 300 words", "zh") == "zh"


# -- plan repair -----------------------------------------------------------------------------------


@pytest.mark.parametrize("target", [601, 800, 1500, 2000, 3000, 10_000, 20_000, 100_000])
def test_plan_bounds_are_feasible(target):
    b = plan_bounds(target)
    assert 1 <= b.min_sections <= b.suggested_sections <= b.max_sections <= agentwrite.MAX_SECTIONS
    assert b.min_sections * b.section_max >= target >= b.max_sections * b.section_min
    if target >= 2000 and target <= 50_000:
        assert (b.section_min, b.section_max) == (200, 1000)


def test_repair_rescales_to_target_exactly_and_clamps():
    sections, notes = repair_plan([{"title": "A", "main_point": "a", "words": 100},
                                   {"title": "B", "main_point": "b", "words": 300},
                                   {"title": "C", "main_point": "c", "words": 5000}], 3000)
    budgets = [s["words"] for s in sections]
    assert sum(budgets) == 3000
    assert all(200 <= w <= 1000 for w in budgets)
    assert any("rescaled" in n for n in notes)


def test_repair_fixes_counts():
    one = repair_plan([{"title": "Only", "main_point": "everything", "words": 10_000}], 10_000)[0]
    assert len(one) == 10 and sum(s["words"] for s in one) == 10_000
    assert all(s["words"] <= 1000 for s in one)
    assert [s["title"] for s in one][:2] == ["Only (part 1 of 10)", "Only (part 2 of 10)"]
    many = repair_plan([{"title": f"T{i}", "main_point": f"p{i}", "words": 20} for i in range(80)], 3000)[0]
    assert len(many) == plan_bounds(3000).max_sections == 15
    assert sum(s["words"] for s in many) == 3000
    # Missing budgets and empty sections.
    mixed, notes = repair_plan([{"title": "", "main_point": "", "words": 5},
                                {"title": "X", "main_point": "x", "words": 0},
                                {"title": "Y", "main_point": "y", "words": 900}], 1800)
    assert [s["title"] for s in mixed] == ["X", "Y"] and sum(s["words"] for s in mixed) == 1800
    assert len(notes) >= 2
    with pytest.raises(Exception, match="no usable sections"):
        repair_plan([{"title": " ", "main_point": "", "words": 3}], 3000)


def test_distribute_budget_properties():
    assert distribute_budget([1, 1, 1], 1000, 200, 1000) == [334, 333, 333]
    out = distribute_budget([1, 50, 1, 1], 2000, 200, 1000)
    assert sum(out) == 2000 and out[1] == 1000 and min(out) >= 200
    with pytest.raises(ValueError):
        distribute_budget([1, 1], 5000, 200, 1000)


# -- text clean-up ----------------------------------------------------------------------------------


def test_label_stripping_and_trimming():
    assert strip_labels("Paragraph 3: The rise of Rome\n\nText") == "The rise of Rome\n\nText"
    assert strip_labels("第2段：秋天来了。") == "秋天来了。"
    assert strip_labels("Paragraph 1 - Main Point: intro - Word Count: 300 words\nReal text.") == "Real text."
    assert strip_labels("Part 1 of the story begins.") == "Part 1 of the story begins."
    text = "\n\n".join(" ".join(["w"] * 99 + ["end."]) for _ in range(10))  # 10 x 100 words
    assert count_words(trim_to_budget(text, 420)) == 400
    assert count_words(trim_to_budget(text, 20)) == 100  # the nearest cut: the first paragraph end
    long_paragraph = " ".join(["Word word word word word word word word word end."] * 40) + "\n\nMore text here."
    assert count_words(trim_to_budget(long_paragraph, 150)) == 150  # falls back to a sentence end


def test_a_looped_last_paragraph_is_cut_inside_it_near_the_budget():
    # A model that loops writes one endless paragraph after a short opening one: the cut lands
    # near the budget inside the loop, not at the opening's end far below it.
    opening = " ".join(["Rome began as a small town."] * 40)  # 240 words
    loop = " ".join(["The legions marched on and on."] * 170)  # 1,020 words
    trimmed = trim_to_budget(f"{opening}\n\n{loop}", 600)
    assert abs(count_words(trimmed) - 600) <= 6 and trimmed.endswith(".")


# -- running ----------------------------------------------------------------------------------------


async def test_agentwrite_writes_sections_in_order_with_the_plan():
    llm = ScriptedWriter(plan_words=(500, 700, 800))
    events = ListEventSink()
    ctx = _ctx(llm, events=events)
    result = await agentwrite.run(ctx, WriteParams(instruction="Write about 2000 words on rivers"))
    assert result["target_words"] == 2000 and result["target_source"] == "instruction"
    assert [s["words"] for s in result["plan"]] == [500, 700, 800]
    assert [s["words"] for s in result["sections"]] == [500, 700, 800]
    assert result["word_count"] == count_words(result["text"]) == 2000
    assert result["scores"]["S_l"] == 100.0 and result["scores"]["quality_status"] == "not_configured"
    assert set(ctx.store.outputs) == {"plan", "section/1", "section/2", "section/3"}
    # Section prompts: shared part first, own budget last, earlier text included.
    section_prompts = llm.prompts[1:]
    assert all(p.startswith('The writing request:\n"""\nWrite about 2000 words on rivers') for p in section_prompts)
    assert section_prompts[1].rstrip().endswith("about 700 words.")
    assert "<written>" not in section_prompts[0] and "<written>" in section_prompts[2]
    progress = [d for t, d in events.events if t == "progress"]
    assert [(p["done"], p["section"], p["sections"]) for p in progress] == [(500, 1, 3), (1200, 2, 3), (2000, 3, 3)]


async def test_short_target_skips_the_plan():
    llm = ScriptedWriter()
    ctx = _ctx(llm)
    result = await agentwrite.run(ctx, WriteParams(instruction="Write a 300-word poem about tea"))
    assert len(llm.prompts) == 1 and "plan" not in ctx.store.outputs
    assert result["word_count"] == 300 and len(result["sections"]) == 1


async def test_short_section_is_continued_and_long_one_trimmed():
    llm = ScriptedWriter(plan_words=(1000, 1000), natural=600)
    result = await agentwrite.run(_ctx(llm), WriteParams(instruction="Write", target_words=2000))
    assert [s["calls"] for s in result["sections"]] == [2, 2]
    assert result["word_count"] == 2000
    assert "Continue from exactly where it stops" in llm.prompts[2]
    assert llm.prompts[2].rstrip().endswith("about 400 words.")

    llm = ScriptedWriter(plan_words=(1000, 1000), factor=2.0)
    result = await agentwrite.run(_ctx(llm), WriteParams(instruction="Write", target_words=2000))
    assert all(s["trimmed"] and s["words"] == 1000 for s in result["sections"])


async def test_cut_off_section_is_repaired_and_flagged():
    llm = ScriptedWriter(plan_words=(1000, 1000), truncate_first=True)
    result = await agentwrite.run(_ctx(llm), WriteParams(instruction="Write", target_words=2000))
    first = result["sections"][0]
    assert first["calls"] == 2 and not first["truncated"]
    assert "it was cut" not in result["text"]  # the partial sentence was dropped


async def test_empty_output_raises_and_is_not_stored():
    llm = ScriptedWriter(plan_words=(1000, 1000), empty_on_call=3)
    ctx = _ctx(llm)
    with pytest.raises(EmptyModelOutput):
        await agentwrite.run(ctx, WriteParams(instruction="Write", target_words=2000))
    assert set(ctx.store.outputs) == {"plan", "section/1"}
    assert "section/2" in ctx.store.errors


async def test_resume_writes_only_missing_sections_and_replays_exactly():
    store = MemoryStepStore()
    plan = [200] * 20  # 4,000 words allow at most 20 sections
    llm = ScriptedWriter(plan_words=plan, fail_on_call=1 + 12)  # the plan, 11 sections, then a crash
    with pytest.raises(RuntimeError):
        await agentwrite.run(_ctx(llm, store=store), WriteParams(instruction="Write", target_words=4000))
    assert sorted(k for k in store.outputs if k.startswith("section/")) == sorted(f"section/{i}" for i in range(1, 12))
    done_before = dict(store.outputs)

    llm2 = ScriptedWriter(plan_words=[999] * 3)  # a different plan would show if the plan were redone
    ctx2 = _ctx(llm2, store=store)
    result = await agentwrite.run(ctx2, WriteParams(instruction="Write", target_words=4000))
    assert len(llm2.prompts) == 9 and ctx2.steps_run == 9
    assert all("Write section" in p for p in llm2.prompts)
    assert llm2.prompts[0].rstrip().endswith("about 200 words.") and "section 12 of 20" in llm2.prompts[0]
    assert all(store.outputs[k] == v for k, v in done_before.items())
    assert len(result["sections"]) == 20 and result["word_count"] == 4000

    # Replaying a finished job calls nothing and returns the same result.
    llm3 = ScriptedWriter()
    again = await agentwrite.run(_ctx(llm3, store=store), WriteParams(instruction="Write", target_words=4000))
    assert llm3.prompts == [] and again == result


async def test_text_so_far_is_compacted_past_the_context_window():
    llm = ScriptedWriter(plan_words=[1000] * 12, context_window=6000)
    result = await agentwrite.run(_ctx(llm), WriteParams(instruction="Write", target_words=12_000))
    assert result["word_count"] == 12_000
    compacted = [s["compacted"] for s in result["sections"]]
    assert not compacted[0] and compacted[-1]
    last = llm.prompts[-1]
    assert "are written as planned and not repeated here" in last
    assert len(last.split()) + llm.options[-1].max_tokens <= 6000


async def test_single_method_is_one_call():
    llm = ScriptedWriter(natural=1200)
    ctx = _ctx(llm)
    result = await agentwrite.run(ctx, WriteParams(instruction="Write", target_words=5000, method="single"))
    assert len(llm.prompts) == 1 and set(ctx.store.outputs) == {"single"}
    assert result["word_count"] == 1200 and result["plan"] == []
    assert result["scores"]["S_l"] == pytest.approx(100 * (1 - (5000 / 1200 - 1) / 2) if 5000 / 1200 < 3 else 0.0)
    assert llm.options[0].max_tokens > 4096 - 100


VERDICT = {"Analysis": "fine", "Relevance": 5, "Accuracy": 4, "Coherence": 4, "Clarity": 5,
           "Breadth and Depth": 3, "Reading Experience": 4}


async def test_quality_is_judged_in_its_own_step():
    judge = ScriptedWriter(verdict=VERDICT)
    ctx = _ctx(ScriptedWriter(), judge=judge)
    result = await agentwrite.run(ctx, WriteParams(instruction="Write", target_words=300))
    scores = result["scores"]
    assert scores["quality_status"] == "scored" and scores["quality"]["Relevance"] == 5
    assert scores["S_q"] == pytest.approx(sum((v - 1) * 25 for k, v in VERDICT.items() if k != "Analysis") / 6)
    assert scores["S"] == pytest.approx((scores["S_l"] + scores["S_q"]) / 2)
    assert "judge" in ctx.store.outputs and "Do NOT take into account whether it is as long" in judge.prompts[0]

    off = await agentwrite.run(_ctx(ScriptedWriter(), judge=judge), WriteParams(instruction="W", target_words=300, judge=False))
    assert off["scores"]["quality_status"] == "not_requested"


async def test_unparseable_verdict_is_missing_not_a_number():
    judge = ScriptedWriter(verdict="I think it is good, maybe 4/5")
    result = await agentwrite.run(_ctx(ScriptedWriter(), judge=judge), WriteParams(instruction="Write", target_words=300))
    scores = result["scores"]
    assert scores["quality_status"] == "missing" and scores["S_q"] is None and scores["quality"] is None
    assert scores["quality_error"] and len(judge.prompts) == 5


# -- through the fake vLLM server (real HTTP, the real endpoint pool) ---------------------------------

LONGBENCH_WRITE = str(Path(__file__).resolve().parent.parent / "agents" / "evaldata" / "longbench_write.jsonl")


def _pool(server, **kw):
    from agents.llm.openai_pool import OpenAIPool

    return OpenAIPool([server.base_url], context_window=8192, **kw)


async def test_end_to_end_through_the_fake_server(fake_llm):
    pool = _pool(fake_llm)
    try:
        for instruction, language in [("Write a 3000-word travel guide to Kyoto for first-time visitors.", "en"),
                                      ("写一篇三千字的散文，主题是故乡的河流。", "zh")]:
            store = MemoryStepStore()
            ctx = JobContext(pool, store=store, job_id=f"e2e-{language}")
            result = await agentwrite.run(ctx, WriteParams(instruction=instruction))
            assert result["target_words"] == 3000 and result["language"] == language
            n = len(result["plan"])
            assert plan_bounds(3000).min_sections <= n <= plan_bounds(3000).max_sections
            assert sum(s["words"] for s in result["plan"]) == 3000
            assert set(store.outputs) == {"plan", *(f"section/{i}" for i in range(1, n + 1))}
            assert [s["title"] for s in result["sections"]] == [s["title"] for s in result["plan"]]
            assert result["scores"]["S_l"] >= 80 and 2400 <= result["word_count"] <= 3900
            if language == "zh":  # Chinese prompts: the piece is Chinese
                assert sum(1 for ch in result["text"] if "\u4e00" <= ch <= "\u9fff") > 0.9 * result["word_count"]
            # The shared prompt prefix (instruction, plan, text so far) is served from the prefix cache.
            assert store.usage["section/3"].cached_tokens > 0.5 * store.usage["section/3"].prompt_tokens
    finally:
        await pool.aclose()


@pytest.mark.parametrize("protocol", ["controlled", "paper"])
async def test_a_long_piece_and_its_judge_fit_a_server_that_counts_more_tokens(fake_llm, protocol):
    # An unseen server: 8,192-token context, about 1.9 tokens per word of its own output. The
    # text so far outgrows the context; every request still fits (none refused), and the judge,
    # counting the 10,000-word piece with the server's tokenizer, reports why it gave no verdict.
    fake_llm.update(max_model_len=8192, token_scale=1.65)
    pool = _pool(fake_llm)
    try:
        ctx = JobContext(pool, store=MemoryStepStore(), judge=pool, settings=Settings(max_target_words=50_000))
        params = WriteParams(instruction="Write a 10000-word history of the Silk Road.", protocol=protocol, judge=True)
        result = await agentwrite.run(ctx, params)
        assert not [r for r in fake_llm.requests() if r.get("status") != 200]
        assert any(s["compacted"] for s in result["sections"])
        assert result["word_count"] > 8192 / 1.9
        assert result["scores"]["quality_status"] == "missing"
        assert "does not fit the judge's context" in result["scores"]["quality_error"]
    finally:
        await pool.aclose()


async def test_resume_after_the_server_dies_mid_write(fake_llm_factory):
    server = fake_llm_factory(die_after=8)  # the plan and a few sections, then the process exits
    pool = _pool(server, max_retries=1, backoff_base_s=0.01, backoff_max_s=0.02)
    store = MemoryStepStore()
    params = WriteParams(instruction="Write a history of the Silk Road", target_words=10_000)
    try:
        with pytest.raises(Exception):
            await agentwrite.run(JobContext(pool, store=store, job_id="crash"), params)
        done = {k for k in store.outputs if k.startswith("section/")}
        assert "plan" in store.outputs and 1 <= len(done) < len(store.outputs["plan"]["sections"])
        if not server.alive:
            server.restart()
        server.update(die_after=None)
        await pool.aclose()
        pool = _pool(server)  # a restarted worker has a fresh pool
        ctx = JobContext(pool, store=store, job_id="crash")
        before = dict(store.outputs)
        result = await agentwrite.run(ctx, params)
        n = len(result["plan"])
        assert ctx.steps_run == n - len(done)  # only the missing sections were written
        assert all(store.outputs[k] == v for k, v in before.items())
        assert result["text"].startswith("\n\n".join(before[f"section/{i}"]["text"] for i in range(1, len(done) + 1)))
    finally:
        await pool.aclose()


def _report_on_fake_server(server, items):
    import asyncio

    from agents.evaluation import local_runner, run_prompt_set

    async def go():
        pool = _pool(server)
        try:
            return await run_prompt_set(items, local_runner(pool, given_length=True), ("agentwrite", "single"), concurrency=16)
        finally:
            await pool.aclose()

    return asyncio.run(go())


def test_longbench_write_subset_on_the_fake_server(fake_llm):
    from agents.evaluation import load_prompt_set, render_table

    items = load_prompt_set(LONGBENCH_WRITE)[::6]  # 20 prompts across all length bins
    report = _report_on_fake_server(fake_llm, items)
    print(render_table(report))
    overall = {m: report["methods"][f"{m}/controlled"]["overall"] for m in ("agentwrite", "single")}
    assert overall["agentwrite"]["failed"] == 0 and overall["agentwrite"]["S_l"] >= 90
    assert overall["single"]["S_l"] < overall["agentwrite"]["S_l"]


@pytest.mark.slow
def test_longbench_write_120_prompts_on_the_fake_server(fake_llm):
    """The acceptance figure: AgentWrite averages S_l >= 90 on all 120 prompts with a model
    whose natural length is 600-1,500 words per call; the single-call baseline is reported."""
    from agents.evaluation import load_prompt_set, render_table, summary_line

    items = load_prompt_set(LONGBENCH_WRITE)
    assert len(items) == 120
    report = _report_on_fake_server(fake_llm, items)
    print(render_table(report))
    print(summary_line(report))
    agentwrite = report["methods"]["agentwrite/controlled"]
    single = report["methods"]["single/controlled"]
    agentwrite_s_l = agentwrite["overall"]["S_l"]
    assert agentwrite["overall"]["failed"] == 0 and single["overall"]["failed"] == 0
    assert agentwrite_s_l >= 90
    assert all(agentwrite["by_length"][b]["S_l"] >= 85 for b in report["bins"])
    # One call cannot reach long targets: the baseline collapses on the [4k,20k] bin.
    assert single["by_length"]["[4k,20k]"]["S_l"] < 20 and single["overall"]["S_l"] < agentwrite_s_l


# -- the real embedded model ------------------------------------------------------------------------


class _Recording:
    """Passes calls through to a real client and keeps the prompts."""

    def __init__(self, inner):
        self.inner = inner
        self.model_name = inner.model_name
        self.context_window = inner.context_window
        self.prompts: list[str] = []

    async def chat(self, messages, options=None):
        self.prompts.append(messages[-1]["content"])
        return await self.inner.chat(messages, options)

    async def complete(self, prompt, options=None):
        return await self.inner.complete(prompt, options)

    async def count_tokens(self, text):
        return await self.inner.count_tokens(text)

    async def aclose(self):
        await self.inner.aclose()


@pytest.mark.model
@pytest.mark.timeout(1500)  # ~80 tokens/s on 2 idle cores; much slower when they are shared
async def test_real_embedded_model_writes_1500_words_following_the_plan():
    from agents.llm.factory import make_llm_client
    from agents.settings import Settings

    llm = _Recording(make_llm_client(Settings(llm_context_window=8192)))
    store = MemoryStepStore()
    try:
        result = await agentwrite.run(JobContext(llm, store=store, job_id="real"),
                                      WriteParams(instruction="Write a 1500-word article about the history of tea.", seed=1))
    finally:
        await llm.aclose()
    plan, sections = result["plan"], result["sections"]
    print(json.dumps({"word_count": result["word_count"], "plan": plan, "sections": sections}, indent=1))
    assert result["target_words"] == 1500 and 1200 <= result["word_count"] <= 1800
    assert len(sections) == len(plan) >= 2 and sum(s["words"] for s in plan) == 1500
    for i, (planned, written) in enumerate(zip(plan, sections), 1):
        assert written["title"] == planned["title"] and written["target_words"] == planned["words"]
        assert 0.5 * planned["words"] <= written["words"] <= 1.6 * planned["words"]
        first_call = next(p for p in llm.prompts if f"Write section {i} of {len(plan)} now" in p)
        assert f'"{planned["title"]}" ({planned["main_point"]})' in first_call
    assert set(store.outputs) == {"plan", *(f"section/{i}" for i in range(1, len(plan) + 1))}
