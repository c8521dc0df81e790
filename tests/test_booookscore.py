"""BooookScore: strict verdict parsers (well-formed, malformed, partially valid), the score
with retries and unparseable sentences (scripted judge), and end-to-end runs against the
fake vLLM server."""
from __future__ import annotations

import json
from typing import Any, Callable

import pydantic
import pytest

from agents import booookscore as bs
from agents.booookscore import LABELS, Verdict, VerdictError, parse_batch, parse_verdict_text, verdict_from_json
from agents.context import JobContext, MemoryJobServices, MemoryStepStore
from agents.llm.openai_pool import OpenAIPool
from agents.llm.structured import make_validator
from agents.llm.types import GenOptions, LLMResult

SUMMARY = (
    "Elizabeth Bennet lives with her parents and four sisters at Longbourn. "
    "Mr. Bingley, a rich young man, rents the nearby estate of Netherfield. "
    "He brings his friend Mr. Darcy, whose pride offends Elizabeth at a ball. "
    "She later marries him."
)


# ----- the paper's two-line format ---------------------------------------------------------------

def test_text_verdict_well_formed():
    v = parse_verdict_text("Questions: Who is Darcy? Why does she marry him?\nTypes: entity omission, causal omission")
    assert v == Verdict(["Who is Darcy?", "Why does she marry him?"], ["entity omission", "causal omission"])
    assert v.flagged
    assert parse_verdict_text("Questions: no confusion\nTypes: no confusion") == Verdict()
    assert not parse_verdict_text("questions: No confusion.\ntypes: \"no confusion\"").flagged
    # Markdown decoration, spacing, case, a wrapped question line, repeated labels.
    v = parse_verdict_text(
        "**Questions:** What ball is this,\nand when does it happen?\n**Types:** Event Omission ,event omission."
    )
    assert v == Verdict(["What ball is this, and when does it happen?"], ["event omission"])


@pytest.mark.parametrize(
    "reply,problem",
    [
        ("Questions: no confusion\nTypes: entity omission", "no confusion"),
        ("Questions: Who is he?\nTypes: no confusion", "no confusion"),
        ("Questions: Who is he?\nTypes: plot hole", "unknown error type"),
        ("Questions: Who is he?\nTypes: entity omission, vagueness", "unknown error type"),
        ("Who is he? entity omission", "expected"),
        ("Questions: Who is he?", "expected"),
        ("Types: entity omission\nQuestions: Who is he?", "before"),
        ("Questions: Who?\nTypes: language\nQuestions: Why?\nTypes: salience", "more than one"),
        ("", "expected"),
    ],
)
def test_text_verdict_malformed(reply, problem):
    with pytest.raises(VerdictError, match=problem):
        parse_verdict_text(reply)


# ----- JSON verdicts -----------------------------------------------------------------------------

def test_json_verdict_valid_forms():
    assert verdict_from_json({"questions": [], "types": []}) == Verdict()
    assert verdict_from_json({"questions": None, "types": None}) == Verdict()  # v2's null
    assert verdict_from_json({"questions": ["no confusion"], "types": ["no confusion"]}) == Verdict()
    v = verdict_from_json({"questions": "Who is he? Why now?", "types": "Entity omission, salience"})
    assert v == Verdict(["Who is he?", "Why now?"], ["entity omission", "salience"])
    # Every label of the closed set is accepted.
    assert verdict_from_json({"questions": ["q?"], "types": list(LABELS)}).types == list(LABELS)


@pytest.mark.parametrize(
    "value,problem",
    [
        ({"questions": [], "types": ["duplication"]}, "without questions"),
        ({"questions": ["Who?"], "types": []}, "without error types"),
        ({"questions": ["Who?"], "types": ["confusing"]}, "unknown error type"),
        ({"questions": ["Who?"]}, "needs both"),
        ({"questions": [1], "types": ["language"]}, "list of strings"),
        (["Who?", "language"], "JSON object"),
    ],
)
def test_json_verdict_invalid(value, problem):
    with pytest.raises(VerdictError, match=problem):
        verdict_from_json(value)


def test_schemas_accept_what_the_parsers_accept():
    ok = {"questions": ["Who?"], "types": ["salience"]}
    assert not list(make_validator(bs.VERDICT_SCHEMA).iter_errors(ok))
    assert list(make_validator(bs.VERDICT_SCHEMA).iter_errors({"questions": [], "types": ["plot"]}))
    schema = bs.batch_schema([3, 4])
    good = {"verdicts": [{"sentence": 3, **ok}, {"sentence": 4, "questions": [], "types": []}]}
    assert not list(make_validator(schema).iter_errors(good))
    for bad in ({"verdicts": [{"sentence": 3, **ok}]},  # one missing
                {"verdicts": [{"sentence": 4, **ok}, {"sentence": 3, **ok}]}):  # renumbered
        assert list(make_validator(schema).iter_errors(bad))


# ----- batches -----------------------------------------------------------------------------------

def test_batch_well_formed_json_and_v2_text():
    value = {"verdicts": [
        {"sentence": 1, "questions": [], "types": []},
        {"sentence": 2, "questions": ["Who is Darcy?"], "types": ["entity omission"]},
    ]}
    parsed = parse_batch(value, [1, 2])
    assert parsed.problems == {}
    assert parsed.verdicts == {1: Verdict(), 2: Verdict(["Who is Darcy?"], ["entity omission"])}
    text = 'Here you go:\n[{"sentence_num": 1, "questions": null, "types": null},\n' \
           ' {"sentence_num": "2", "questions": "Who is Darcy?", "types": "entity omission"}]\nDone.'
    assert parse_batch(text, [1, 2]).verdicts == parsed.verdicts


def test_batch_partially_valid_keeps_the_valid_items():
    value = [
        {"sentence_num": 1, "questions": None, "types": None},
        {"sentence_num": 2, "questions": None, "types": "salience"},  # contradiction
        {"sentence_num": 3, "questions": "Why?", "types": "plot hole"},  # unknown label
        {"sentence_num": 5, "questions": "What?", "types": "language"},
        {"sentence_num": 5, "questions": None, "types": None},  # answered twice, differently
        {"sentence_num": 9, "questions": None, "types": None},  # not asked: ignored
        "garbage",
    ]
    parsed = parse_batch(value, [1, 2, 3, 4, 5])
    assert parsed.verdicts == {1: Verdict()}
    assert set(parsed.problems) == {2, 3, 4, 5}
    assert "missing" in parsed.problems[4] or "no verdict" in parsed.problems[4]
    assert "conflicting" in parsed.problems[5]


def test_batch_malformed_reply_has_no_verdicts():
    for reply in ("I cannot help with that.", "[{\"sentence_num\": 1, ", "{}", None, 42):
        parsed = parse_batch(reply, [1, 2])
        assert parsed.verdicts == {} and set(parsed.problems) == {1, 2}


def test_params_need_exactly_one_source():
    assert bs.BooookScoreParams(summary="A sentence.").mode == "per_sentence"
    for bad in ({}, {"summary": "x", "job_id": "j"}, {"summary": "  "}, {"summary": "x", "batch_size": 0},
                {"summary": "x", "mode": "fast"}):
        with pytest.raises(pydantic.ValidationError):
            bs.BooookScoreParams(**bad)


# ----- the score with a scripted judge -----------------------------------------------------------

class ScriptedJudge:
    """Answers each prompt with `reply(prompt, n)`, n = how often that prompt was seen before."""

    model_name = "scripted-judge"
    context_window = 8192

    def __init__(self, reply: Callable[[str, int], str]):
        self.reply = reply
        self.seen: dict[str, int] = {}
        self.prompts: list[str] = []

    async def chat(self, messages, options: GenOptions | None = None) -> LLMResult:
        prompt = messages[0]["content"]  # chat_json's repair turns come after it
        n = self.seen.get(prompt, 0)
        self.seen[prompt] = n + 1
        self.prompts.append(messages[-1]["content"])
        return LLMResult(text=self.reply(prompt, n), finish_reason="stop", prompt_tokens=10,
                         completion_tokens=10, latency_s=0.0, model=self.model_name)

    async def complete(self, prompt, options=None):
        raise NotImplementedError

    async def count_tokens(self, text: str) -> int:
        return len(text.split())

    async def aclose(self) -> None:
        pass


def target_sentence(prompt: str) -> str:
    return prompt.split("Check this sentence of the summary:\n\"\"\"\n")[1].split("\n\"\"\"")[0]


async def test_score_per_sentence_with_retries_and_an_unparseable_sentence():
    def reply(prompt: str, n: int) -> str:
        sentence = target_sentence(prompt)
        if sentence.startswith("He brings"):
            return "Questions: no confusion\nTypes: entity omission"  # never consistent
        if sentence.startswith("She later") and n == 0:
            return "Sure! Let me think."  # malformed first, then fine
        if sentence.startswith("She later"):
            return "Questions: Who does she marry, and why?\nTypes: causal omission, discontinuity"
        return "Questions: no confusion\nTypes: no confusion"

    judge = ScriptedJudge(reply)
    store = MemoryStepStore()
    ctx = JobContext(judge, store=store)
    result = await bs.run(ctx, {"summary": SUMMARY, "output": "text"})
    assert result["sentences"] == 4 and result["unparseable"] == [2] and result["scored"] == 3
    assert result["score"] == pytest.approx(1 - 1 / 3)
    assert result["flagged"] == [{
        "index": 3, "sentence": "She later marries him.",
        "types": ["causal omission", "discontinuity"], "questions": ["Who does she marry, and why?"],
    }]
    assert result["type_counts"]["causal omission"] == 1 and result["type_counts"]["salience"] == 0
    assert result["judge"] == "llm" and result["judge_model"] == "scripted-judge"
    assert result["calls"] == 1 + 1 + bs.JUDGE_ATTEMPTS + 2 == len(judge.prompts)
    assert set(store.outputs) == {f"judge/{i}" for i in range(4)}
    # Replay asks nothing.
    await bs.run(JobContext(judge, store=store), {"summary": SUMMARY, "output": "text"})
    assert len(judge.prompts) == result["calls"]


async def test_score_json_mode_repairs_then_validates():
    def reply(prompt: str, n: int) -> str:
        sentence = target_sentence(prompt)
        if sentence.startswith("Mr. Bingley"):
            return '{"questions": ["What is Netherfield?"], "types": ["entity omission"]}'
        if sentence.startswith("He brings") and n == 0:
            return '{"questions": [], "types": ["salience"]}'  # valid schema, contradictory
        return '{"questions": [], "types": []}'

    judge = ScriptedJudge(reply)
    result = await bs.run(JobContext(judge, judge=judge), {"summary": SUMMARY})
    assert result["judge"] == "judge" and result["unparseable"] == []
    assert result["score"] == pytest.approx(0.75)
    assert [f["index"] for f in result["flagged"]] == [1]


async def test_score_batched_asks_again_only_for_the_missing_sentences():
    def reply(prompt: str, n: int) -> str:
        asked = [int(x) for x in prompt.split("Check each of these sentences: ")[1].split(".")[0].split(", ")]
        if asked == [1, 2, 3]:  # the first batch's answer covers only its first sentence
            return json.dumps({"verdicts": [{"sentence": asked[0], "questions": [], "types": []}]})
        return json.dumps({"verdicts": [
            {"sentence": k, "questions": ["Who?"] if k == 4 else [], "types": ["entity omission"] if k == 4 else []}
            for k in asked
        ]})

    judge = ScriptedJudge(reply)
    result = await bs.run(JobContext(judge), {"summary": SUMMARY, "mode": "batched", "batch_size": 3, "output": "text"})
    assert result["mode"] == "batched" and "not comparable" in result["comparable_to"]
    assert result["unparseable"] == [] and result["scored"] == 4
    assert [f["index"] for f in result["flagged"]] == [3] and result["score"] == 0.75
    # Batch 1 (sentences 1-3): a partial answer, then one ask for 2 and 3; batch 2: one ask.
    assert result["calls"] == 3
    assert any("Check each of these sentences: 2, 3." in p for p in judge.prompts)


# ----- end to end against the fake server --------------------------------------------------------

async def test_end_to_end_against_the_fake_server(fake_llm):
    pool = OpenAIPool([fake_llm.base_url], context_window=8192)
    try:
        for mode, steps in (("per_sentence", "judge/"), ("batched", "judge/batch/")):
            store = MemoryStepStore()

            results = MemoryJobServices(results={"job-1": {"summary": SUMMARY}})
            ctx = JobContext(pool, store=store, judge=pool, services=results)
            result = await bs.run(ctx, {"job_id": "job-1", "mode": mode, "batch_size": 3})
            assert result["source"] == "job job-1" and result["sentences"] == 4
            assert result["scored"] + len(result["unparseable"]) == 4
            # The fake judge fills schema-valid verdicts: every one parses.
            assert result["unparseable"] == [] and 0.0 <= result["score"] <= 1.0
            for f in result["flagged"]:
                assert f["types"] and set(f["types"]) <= set(LABELS) and f["questions"]
            assert all(k.startswith(steps) for k in store.outputs)
            before = fake_llm.stats()["generation_requests"]
            again = await bs.run(JobContext(pool, store=store, judge=pool, services=results),
                                 {"job_id": "job-1", "mode": mode, "batch_size": 3})
            assert again == result and fake_llm.stats()["generation_requests"] == before
    finally:
        await pool.aclose()


async def test_malformed_judge_replies_become_unparseable_not_guesses(fake_llm_factory):
    # Every reply is damaged; some damage (a code fence, prose around the JSON) is repaired by
    # the tolerant reader, the rest leaves sentences unparseable after every retry.
    server = fake_llm_factory(malformed_json_rate=1.0)
    pool = OpenAIPool([server.base_url], context_window=8192)
    store = MemoryStepStore()
    try:
        result = await bs.run(JobContext(pool, store=store, judge=pool), {"summary": SUMMARY})
    finally:
        await pool.aclose()
    assert result["unparseable"] and result["scored"] + len(result["unparseable"]) == 4
    assert not {f["index"] for f in result["flagged"]} & set(result["unparseable"])
    if result["scored"]:
        assert result["score"] == pytest.approx(1 - len(result["flagged"]) / result["scored"])
    for i in result["unparseable"]:
        out = store.outputs[f"judge/{i}"]
        assert out["verdict"] is None and len(out["problems"]) == bs.JUDGE_ATTEMPTS
        assert out["calls"] == bs.JUDGE_ATTEMPTS * bs.STRUCTURED_ATTEMPTS


# ----- protocol "paper": the reference package's v1 ---------------------------------------------


def test_reference_parser_follows_the_reference_rules():
    assert bs.parse_verdict_reference("Questions: no confusion\nTypes: no confusion").flagged is False
    verdict = bs.parse_verdict_reference("Questions: Who is he?\nTypes: Entity omission, causal omission")
    assert verdict.types == ["entity omission", "causal omission"] and verdict.questions == ["Who is he?"]
    for bad in ("Questions: no confusion", "Types: x\nQuestions: y", "Questions: no confusion\nTypes: salience",
                "Questions: Who?\nTypes: entity omission; salience", "Questions:Who?\nTypes:salience"):
        with pytest.raises(bs.VerdictError):
            bs.parse_verdict_reference(bad)


def paper_sentence(prompt: str) -> str:
    return prompt.split("The sentence to check:\n")[1].split("\n\nAnswer in exactly two lines")[0]


async def test_paper_protocol_runs_the_reference_v1():
    repeated = SUMMARY + " She later marries him."  # a repeated sentence counts once, as in the reference
    options: list[GenOptions] = []

    def reply(prompt: str, n: int) -> str:
        sentence = paper_sentence(prompt)
        if sentence.startswith("Mr. Bingley"):
            return "Questions: no confusion\nTypes: salience" if n == 0 else "Questions: Why?\nTypes: causal omission"
        if sentence.startswith("He brings"):
            return "I cannot tell."  # never parses: counted as no confusion, as a parsed reference run would
        if sentence == "She later marries him.":
            return "Questions: Why does she marry him after all?\nTypes: causal omission"
        return "Questions: no confusion\nTypes: no confusion"

    judge = ScriptedJudge(reply)
    original_chat = judge.chat

    async def chat(messages, opts=None):
        options.append(opts)
        return await original_chat(messages, opts)

    judge.chat = chat
    result = await bs.run(JobContext(judge), {"summary": repeated, "protocol": "paper"})
    assert result["output"] == "text" and result["sentences"] == 5
    assert all(o.max_tokens == 100 and o.temperature == 0.0 and o.json_schema is None for o in options)
    # Distinct sentences: 4; flagged: Bingley's (asked again) and the last occurrence of the repeated one.
    assert [f["index"] for f in result["flagged"]] == [1, 4] and result["score"] == pytest.approx(1 - 2 / 4)
    assert result["unparseable"] == [2]
    record = result["protocol"]
    assert record["name"] == "paper" and record["prompts"] == {"get_annotations.txt": "bundled"}
    assert any(d.startswith("sentences whose verdict never parsed") for d in record["differs_from_paper"])
    assert result["comparable_to"].startswith("none:") and "Longform's own judge prompt" in result["comparable_to"]
    bs.KIND.validate_result(result)


def test_paper_protocol_is_v1_only():
    with pytest.raises(ValueError, match="use mode per_sentence"):
        bs.BooookScoreParams(summary="A. B.", protocol="paper", mode="batched")
