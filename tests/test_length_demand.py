"""Reading the length demand of a request (agents/length_target.py: read_demand, read_length_demand)."""
from __future__ import annotations

import json

import pytest

from agents import agentwrite, selflengthen
from agents.agentwrite import WriteParams
from agents.context import JobContext, MemoryStepStore
from agents.length_target import (
    given_demand,
    make_demand,
    parse_target_words,
    read_demand,
    read_length_demand,
)
from agents.llm.types import GenOptions, LLMResult
from agents.selflengthen import LengthenParams
from agents.settings import Settings
from tests.test_agentwrite import ScriptedWriter


@pytest.mark.parametrize("text,kind,words,low,high,aim", [
    ("Write an essay of less than 5,000 words on trade.", "at_most", 5000, 2500, 5000, 4545),
    ("Write a story of more than 7,000 words.", "at_least", 7000, 7000, 10500, 7778),
    ("Write a report of 5,000-6,000 words.", "range", 6000, 5000, 6000, 5500),
    ("Write between 800 and 1000 words on tea.", "range", 1000, 800, 1000, 900),
    ("写一篇三千字左右的散文", "about", 3000, 2400, 3600, 3000),
    ("写一篇文章，不少于2000字", "at_least", 2000, 2000, 3000, 2223),
    ("写一篇关于春天的作文，500字以内", "at_most", 500, 250, 500, 454),
    ("写两千多字的小说", "at_least", 2000, 2000, 3000, 2223),
    ("Write an essay, 500 words or less.", "at_most", 500, 250, 500, 454),
    ("Describe it in at least 400 words.", "at_least", 400, 400, 600, 445),
    ("Write about 3000 words on the Roman Empire", "about", 3000, 2400, 3600, 3000),
    ("Write a 10-page report on solar power", "pages", 2000, 1600, 2400, 2000),
    ("Write a five-paragraph essay about dogs", "paragraphs", 500, 400, 600, 500),
])
def test_demand_kinds_intervals_and_aims(text, kind, words, low, high, aim):
    d = read_demand(text)
    assert (d.kind, d.words, d.low, d.high, d.aim) == (kind, words, low, high, aim)
    assert d.low <= d.aim <= d.high and d.source == "rules" and not d.ambiguous


def test_pages_and_paragraphs_keep_their_count_and_bound():
    d = read_demand("Write a 10-page report on solar power")
    assert (d.kind, d.bound, d.count) == ("pages", "about", 10)
    d = read_demand("Write a five-paragraph essay about dogs")
    assert (d.kind, d.count) == ("paragraphs", 5)


def test_whole_piece_and_part():
    text = "Write a research paper of over 5000 words on climate policy, with an abstract of around 500 words."
    d = read_demand(text)
    assert (d.kind, d.words, d.aim) == ("at_least", 5000, 5556)
    assert [(p.words, p.stated) for p in d.parts] == [(500, "500 words")]
    assert not d.ambiguous and parse_target_words(text) == 5000  # was read as 500
    d = read_demand("The title should be under 10 words, and the essay about 800 words.")
    assert d.words == 800 and [p.words for p in d.parts] == [10]
    d = read_demand("论文不少于8000字，其中摘要300字左右。")
    assert d.words == 8000 and d.kind == "at_least" and [p.words for p in d.parts] == [300]


def test_material_is_not_a_demand_and_disagreement_is_flagged():
    assert read_demand("Summarize this 300-word note. Then write a 2000-word essay.").words == 2000
    d = read_demand("Write 300 words on tea. Actually make it 2000 words.")
    assert d.ambiguous and d.words == 2000 and d.candidates == (300, 2000)
    assert read_demand("Write a poem") is None and parse_target_words("Write a poem") is None


def test_given_and_made_demands():
    d = given_demand(1200)
    assert (d.kind, d.source, d.aim, d.low, d.high) == ("about", "given", 1200, 960, 1440)
    d = make_demand("at_least", 800, stated="more than 800")
    assert (d.low, d.high, d.aim) == (800, 1200, 889)
    assert make_demand("range", 600).bound == "about"  # a range needs its lower bound
    assert set(d.as_dict()) == {"kind", "bound", "words", "low", "high", "aim", "stated", "source", "count",
                                "parts", "ambiguous", "candidates"}


class DemandReader:
    """Answers the demand question with a fixed JSON reply; counts calls."""

    model_name = "reader"
    context_window = 8192

    def __init__(self, answer):
        self.answer = answer
        self.calls = []

    async def chat(self, messages, options=None):
        self.calls.append((messages, options or GenOptions()))
        return LLMResult(text=json.dumps(self.answer), finish_reason="stop", prompt_tokens=10, completion_tokens=10,
                         latency_s=0.0, model=self.model_name)

    async def count_tokens(self, text):
        return len(text.split())


async def test_the_model_reads_the_demand_when_the_rules_disagree():
    text = "Write 300 words on tea. Actually make it 2000 words."
    llm = DemandReader({"whole_piece_words": 300, "kind": "at_most", "range_low": None})
    ctx = JobContext(llm, store=MemoryStepStore())
    d = await read_length_demand(ctx, text)
    assert (d.source, d.words, d.kind, d.aim) == ("model", 300, "at_most", 272)
    assert [p.words for p in d.parts] == [2000]
    assert "length_demand" in ctx.store.outputs and llm.calls[0][1].json_schema is not None
    assert "300, 2000" in llm.calls[0][0][0]["content"]
    # Replayed: no new call.
    again = JobContext(llm, store=ctx.store)
    assert (await read_length_demand(again, text)).words == 300 and len(llm.calls) == 1


async def test_a_model_answer_not_in_the_text_leaves_the_rules_reading():
    text = "Write 300 words on tea. Actually make it 2000 words."
    d = await read_length_demand(JobContext(DemandReader({"whole_piece_words": 999, "kind": "about"})), text)
    assert d.source == "rules" and d.words == 2000


async def test_an_unambiguous_demand_asks_no_model():
    llm = DemandReader({})
    d = await read_length_demand(JobContext(llm), "写一篇三千字左右的散文")
    assert d.words == 3000 and llm.calls == []


def _ctx(llm):
    return JobContext(llm, store=MemoryStepStore(), settings=Settings(max_target_words=50_000))


async def test_write_aims_at_the_readings_aim_and_records_it():
    llm = ScriptedWriter()
    result = await agentwrite.run(_ctx(llm), WriteParams(instruction="Write a 400 words or less poem about tea"))
    assert result["target_words"] == 363 and result["target_source"] == "instruction"
    assert result["length_demand"]["kind"] == "at_most" and result["length_demand"]["words"] == 400
    assert agentwrite.KIND.validate_result(result).length_demand.aim == 363
    # Given: the number itself; paper: the stated number.
    result = await agentwrite.run(_ctx(ScriptedWriter()), WriteParams(instruction="Write a poem", target_words=300))
    assert result["target_words"] == 300 and result["length_demand"]["source"] == "given"
    result = await agentwrite.run(_ctx(ScriptedWriter()), WriteParams(
        instruction="Write a poem of at least 300 words", protocol="paper", method="single"))
    assert result["target_words"] == 300 and result["length_demand"]["kind"] == "at_least"
    result = await agentwrite.run(_ctx(ScriptedWriter()), WriteParams(instruction="Write a poem"))
    assert result["length_demand"] is None and result["target_source"] == "default"


async def test_lengthen_records_the_reading():
    from tests.test_lengthen import Scripted

    result = await selflengthen.run(_ctx(Scripted()), LengthenParams(
        instruction="Write an essay about rivers of more than 300 words."))
    assert result["length_demand"]["kind"] == "at_least" and result["target_words"] == 334
    assert selflengthen.KIND.validate_result(result).length_demand.words == 300
