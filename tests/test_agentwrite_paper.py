"""AgentWrite under `protocol: "paper"`: one plan call, one call per plan line, nothing else."""
from __future__ import annotations

import dataclasses
import math

import pytest

from agents import agentwrite
from agents.agentwrite import WriteParams
from agents.agentwrite_paper import describe_step, plan_steps
from agents.context import JobContext, MemoryStepStore
from agents.llm.types import GenOptions, LLMBadRequest, LLMResult
from agents.settings import Settings


class PaperWriter:
    """Answers the plan prompt with `steps` free-text plan lines and every other prompt with
    a section of `section_words` words (far under any budget: the paper does not continue)."""

    model_name = "paper-writer"

    def __init__(self, steps=3, section_words=40, context_window=32768):
        self.steps = steps
        self.section_words = section_words
        self.context_window = context_window
        self.prompts: list[str] = []
        self.options: list[GenOptions] = []

    async def chat(self, messages, options=None):
        prompt = messages[-1]["content"]
        self.prompts.append(prompt)
        self.options.append(options)
        if "detailed writing plan" in prompt:
            lines = [f"Paragraph {i} - Main Point: topic number {i} - Word Count: {300 + i} words"
                     for i in range(1, self.steps + 1)]
            text = "\n\n".join(lines)  # blank lines between steps, which the reference removes
        else:
            text = f"Paragraph {len(self.prompts) - 1}: " + " ".join(["word"] * (self.section_words - 1)) + " end."
        return LLMResult(text=text, finish_reason="stop", prompt_tokens=len(prompt.split()),
                         completion_tokens=len(text.split()), latency_s=0.0, model=self.model_name)

    async def count_tokens(self, text):
        return len(text.split())

    async def aclose(self):
        pass


def _ctx(llm, store=None):
    return JobContext(llm, store=store or MemoryStepStore(), settings=Settings(max_target_words=50_000))


def test_plan_lines_are_read_as_the_reference_reads_them():
    text = "Paragraph 1 - Main Point: A - Word Count: 400 words\n\nParagraph 2 - Main Point: B - Word Count: 1,200 words\n\n\n\n"
    assert plan_steps(text) == ["Paragraph 1 - Main Point: A - Word Count: 400 words",
                                "Paragraph 2 - Main Point: B - Word Count: 1,200 words"]
    assert describe_step(plan_steps(text)[1]) == {"title": "Paragraph 2", "main_point": "B", "words": 1200}
    assert describe_step("Intro about cats") == {"title": "Intro about cats", "main_point": "Intro about cats", "words": 0}


async def test_paper_agentwrite_is_one_plan_call_and_one_call_per_section():
    llm = PaperWriter(steps=4)
    store = MemoryStepStore()
    result = await agentwrite.run(_ctx(llm, store), WriteParams(
        instruction="Write a 2000-word story about a lighthouse.", protocol="paper"))
    assert len(llm.prompts) == 1 + 4  # no continuation although every section is far under budget
    assert set(store.outputs) == {"plan", "section/1", "section/2", "section/3", "section/4"}
    assert all(o.temperature == 1.0 and o.max_tokens == 4096 and o.json_schema is None for o in llm.options)
    # Every section prompt holds the instruction, the whole plan, the step and all text so far.
    sections = [store.outputs[f"section/{i}"]["text"] for i in range(1, 5)]
    last_prompt = llm.prompts[-1]
    assert "Write a 2000-word story about a lighthouse." in last_prompt
    assert "Paragraph 1 - Main Point: topic number 1" in last_prompt and "Word Count: 304 words" in last_prompt
    assert all(text in last_prompt for text in sections[:3])
    assert not any(s["trimmed"] or s["calls"] != 1 for s in result["sections"])
    assert [p["words"] for p in result["plan"]] == [301, 302, 303, 304]
    assert all(not text.startswith("Paragraph") for text in sections)  # labels removed (paper's post-processing)
    assert result["target_words"] == 2000 and result["target_source"] == "instruction"
    record = result["protocol"]
    assert record["name"] == "paper" and record["differs_from_paper"] == []
    assert record["prompts"] == {"longwriter/plan.txt": "bundled", "longwriter/write.txt": "bundled"}
    assert record["comparable_to_paper"] is False  # Longform's own wording ran, not the paper's prompts
    agentwrite.KIND.validate_result(result)


async def test_paper_refuses_plans_over_fifty_steps_and_stores_no_section():
    llm = PaperWriter(steps=51)
    store = MemoryStepStore()
    with pytest.raises(ValueError, match="refuses plans of more than 50"):
        await agentwrite.run(_ctx(llm, store), WriteParams(instruction="Write 20000 words on rivers.", protocol="paper"))
    assert store.outputs == {} and len(llm.prompts) == 1


async def test_paper_single_sends_the_instruction_alone():
    llm = PaperWriter()
    instruction = "Write a short poem about rain."
    result = await agentwrite.run(_ctx(llm), WriteParams(instruction=instruction, protocol="paper", method="single"))
    assert llm.prompts == [instruction]
    assert llm.options[0].temperature == 0.5
    assert result["protocol"]["differs_from_paper"] == [] and result["protocol"]["prompts"] == {}
    assert result["protocol"]["comparable_to_paper"] is True  # no prompt of Longform's own in between


async def test_paper_states_a_given_target_only_in_the_instruction_and_says_so():
    llm = PaperWriter(steps=2)
    result = await agentwrite.run(_ctx(llm), WriteParams(
        instruction="Write about rivers.", target_words=1200, protocol="paper", temperature=0.7))
    assert "Write about rivers. (about 1,200 words)" in llm.prompts[0]
    differs = result["protocol"]["differs_from_paper"]
    assert any(d.startswith("target_words: added to the instruction") for d in differs)
    assert "temperature: 0.7 (paper: 1.0)" in differs


async def test_controlled_records_how_it_differs_from_the_paper():
    from tests.test_agentwrite import ScriptedWriter

    result = await agentwrite.run(_ctx(ScriptedWriter()), WriteParams(instruction="Write 1200 words about tides."))
    record = result["protocol"]
    assert record["name"] == "controlled" and not record["comparable_to_paper"]
    assert any(d.startswith("length control:") for d in record["differs_from_paper"])
    assert "temperature: 0.7 (paper: 1.0)" in record["differs_from_paper"]
    assert record["prompts"] == {"agentwrite/plan.j2": "bundled", "agentwrite/section.j2": "bundled"}


async def test_paper_agentwrite_through_the_fake_server(fake_llm_factory):
    from agents.llm.openai_pool import OpenAIPool

    server = fake_llm_factory(max_model_len=131072)  # all text so far stays in every prompt, as with GPT-4o
    pool = OpenAIPool([server.base_url])
    try:
        store = MemoryStepStore()
        result = await agentwrite.run(_ctx(pool, store), WriteParams(
            instruction="Write a 1500-word guide to Kyoto.", protocol="paper"))
        steps = len([k for k in store.outputs if k.startswith("section/")])
        assert steps == len(result["plan"]) >= 1
        assert store.usage["plan"].calls == 1 and all(store.usage[f"section/{i}"].calls == 1 for i in range(1, steps + 1))
        assert result["word_count"] > 0 and result["protocol"]["name"] == "paper"
    finally:
        await pool.aclose()


async def test_paper_judges_with_the_reference_judge_file():
    from tests.test_agentwrite import VERDICT, ScriptedWriter

    judge = ScriptedWriter(verdict=VERDICT)
    ctx = JobContext(PaperWriter(), store=MemoryStepStore(), settings=Settings(max_target_words=50_000), judge=judge)
    result = await agentwrite.run(ctx, WriteParams(instruction="Write a short poem about rain.", protocol="paper",
                                                   method="single"))
    assert result["scores"]["quality_status"] == "scored"
    assert "<User Request>\nWrite a short poem about rain.\n</User Request>" in judge.prompts[0]
    assert judge.options[0].temperature == 0.5 and judge.options[0].max_tokens == 1024
    assert result["protocol"]["prompts"] == {"longwriter/judge.txt": "bundled"}
    assert result["protocol"]["comparable_to_paper"] is False


class TightServer(PaperWriter):
    """A server with an 8,192-token context and a tokenizer that counts 1.9 tokens per word
    (cl100k counts about 1.3): it refuses, as vLLM does, a request whose prompt and max_tokens
    do not fit."""

    def __init__(self, steps, section_words):
        super().__init__(steps=steps, section_words=section_words, context_window=8192)

    async def count_tokens(self, text):
        return math.ceil(1.9 * len(text.split()))

    async def chat(self, messages, options=None):
        prompt_tokens = await self.count_tokens(messages[-1]["content"]) + 12
        if prompt_tokens + options.max_tokens > self.context_window:
            raise LLMBadRequest(f"{prompt_tokens} + {options.max_tokens} > {self.context_window}")
        result = await super().chat(messages, options)
        if "detailed writing plan" in messages[-1]["content"]:
            return result
        n = len(self.prompts) - 1  # each section its own words, to tell which ones a prompt shows
        word = "sec" + "".join(chr(ord("a") + int(d)) for d in str(n)) + "word"  # 1: secbword, 11: secbbword
        return dataclasses.replace(result, text=" ".join([word] * (self.section_words - 1)) + " end.")


async def test_paper_keeps_all_text_so_far_while_it_fits_then_the_most_recent_sections():
    # 12 sections of 800 words: all text so far outgrows the 8,192-token context after about 3.
    llm = TightServer(steps=12, section_words=800)
    result = await agentwrite.run(_ctx(llm), WriteParams(
        instruction="Write a 10000-word history of lighthouses.", protocol="paper"))
    sections = result["sections"]
    assert len(sections) == 12 and result["word_count"] == 12 * 800
    assert not sections[1]["compacted"] and sections[-1]["compacted"]
    assert "secbword" in llm.prompts[2] and "secbword" not in llm.prompts[-1] and "secbbword" in llm.prompts[-1]
    # Each section call keeps room for its stated 300+ words at the server's 1.9 tokens per word.
    assert all(o.max_tokens >= 310 * 1.9 for o in llm.options[1:])
    compacted = [i for i, s in enumerate(sections, 1) if s["compacted"]]
    differs = result["protocol"]["differs_from_paper"]
    assert any(d.startswith(f"text so far: sections {compacted[0]}-12 ") for d in differs), differs


async def test_paper_fails_with_the_reason_when_the_plan_alone_leaves_no_room():
    llm = TightServer(steps=2, section_words=40)
    llm.context_window = 300
    with pytest.raises(LLMBadRequest, match="does not fit the model's 300-token context"):
        await agentwrite.run(_ctx(llm), WriteParams(instruction="Write a 600-word story about a lighthouse.", protocol="paper"))
