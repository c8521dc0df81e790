"""Dataset builds and target lengths: the export states the length in the user turn, an
instruction without one gets a seeded draw (and says so), and the refusal gate."""
from __future__ import annotations

import json
import random
from statistics import median

import pytest
from pydantic import ValidationError

from agents import dataset_kind
from agents.context import ChildJob, JobContext, MemoryStepStore
from agents.dataset import (
    GATES,
    FixedLengths,
    GateSettings,
    LongWriter6kLengths,
    Sample,
    UniformLengths,
    apply_gates,
    assign_lengths,
    draw_length,
    draw_unit,
    export_records,
    is_refusal,
    user_turn,
)
from agents.length_target import parse_target_words, with_stated_length, without_stated_length
from agents.settings import Settings
from agents.text import count_words
from fakellm.textgen import generate_text


def _text(seed: int, words: int, lang: str = "en") -> str:
    return generate_text(random.Random(seed), lang, ["lighthouses", "the sea"] if lang == "en" else ["灯塔", "大海"], words)


def _sample(instruction: str, target: int | None, text: str = "Some text.") -> Sample:
    return Sample(instruction=instruction, status="succeeded", text=text, target_words=target,
                  word_count=count_words(text), language="en")


# ---- the export states the length ----------------------------------------------------------------


def test_export_states_the_length_in_the_user_turn():
    samples = [_sample("Write a story about a lighthouse keeper.", 3000), _sample("写一篇关于灯塔的故事", 4500)]
    lw = export_records(samples, "longwriter")
    assert lw[0]["messages"][0] == {"role": "user", "content": "Write a story about a lighthouse keeper. (about 3,000 words)"}
    assert lw[1]["messages"][0]["content"] == "写一篇关于灯塔的故事（约4500字）"
    assert [r["messages"][1]["content"] for r in lw] == ["Some text.", "Some text."]  # the shape is unchanged
    assert export_records(samples, "alpaca")[0] == {
        "instruction": "Write a story about a lighthouse keeper. (about 3,000 words)", "input": "", "output": "Some text."}
    assert export_records(samples, "sharegpt")[1]["conversations"][0] == {"from": "human", "value": "写一篇关于灯塔的故事（约4500字）"}
    # The stated length reads back as the target.
    assert [parse_target_words(r["messages"][0]["content"]) for r in lw] == [3000, 4500]


def test_export_leaves_a_stated_length_alone_and_can_be_turned_off():
    stated = [_sample("Write a 5000-word history of Rome.", 4800), _sample("写一篇三千字的游记", 3000)]
    assert [r["messages"][0]["content"] for r in export_records(stated)] == [s.instruction for s in stated]
    plain = _sample("Write a story about a lighthouse keeper.", 3000)
    assert export_records([plain], state_length=False)[0]["messages"][0]["content"] == plain.instruction
    assert export_records([plain], "alpaca", state_length=False)[0]["instruction"] == plain.instruction
    # No known target: nothing to state.
    assert user_turn(_sample("Write a story.", None)) == "Write a story."
    # A drawn length (stated in the instruction at build time) comes off again when turned off.
    drawn = _sample(with_stated_length("Write a story about a lighthouse keeper.", 6400), 6400)
    assert user_turn(drawn) == "Write a story about a lighthouse keeper. (about 6,400 words)"
    assert user_turn(drawn, state_length=False) == "Write a story about a lighthouse keeper."
    drawn_zh = _sample(with_stated_length("写一篇关于灯塔的故事。", 12000), 12000)
    assert user_turn(drawn_zh, state_length=False) == "写一篇关于灯塔的故事。"
    assert without_stated_length("Write it. (about 6,400 words)", 5000) == "Write it. (about 6,400 words)"  # not ours


@pytest.mark.parametrize("instruction", [
    "Write a story about a lighthouse keeper.",
    "Describe each of the five planets",       # on one line this would read as 5 x N
    "Write three essays, each on a city",
    "写一篇关于灯塔的故事",
    "分别介绍五个城市",
    "Write about the year 2024",
    "   Trailing spaces   ",
])
@pytest.mark.parametrize("words", [120, 2300, 12500, 32000])
def test_stated_length_reads_back(instruction, words):
    stated = with_stated_length(instruction, words)
    assert parse_target_words(stated) == words
    assert stated.startswith(instruction.rstrip())
    assert without_stated_length(stated, words) == instruction.rstrip()
    assert with_stated_length(instruction, words) == stated  # deterministic


# ---- drawn lengths --------------------------------------------------------------------------------


def _draws(distribution, n: int = 4000, seed: int = 0, cap: int = 100_000) -> list[int]:
    return [draw_length(distribution, draw_unit(seed, f"instruction {i}"), cap) for i in range(n)]


def test_default_distribution_is_like_longwriter_6k():
    draws = _draws(LongWriter6kLengths())
    assert min(draws) >= 2000 and max(draws) <= 32_000
    assert all(d % 100 == 0 for d in draws)
    body = [d for d in draws if d <= 10_000]
    assert 0.87 < len(body) / len(draws) < 0.93  # 90% in the body, 10% in the tail
    # The body is uniform: each quarter of 2,000-10,000 holds about a quarter of it.
    for lo in (2000, 4000, 6000, 8000):
        assert 0.21 < sum(1 for d in body if lo <= d < lo + 2000) / len(body) < 0.29
    tail = [d for d in draws if d > 10_000]
    assert max(tail) > 25_000 and median(tail) < 21_000  # a thinning tail up to 32k
    assert 6000 < median(draws) < 7000


def test_draws_are_seeded_deterministic_and_capped():
    dist = LongWriter6kLengths()
    assert _draws(dist, 200) == _draws(dist, 200)
    assert _draws(dist, 200, seed=1) != _draws(dist, 200)
    assert max(_draws(dist, 500, cap=8000)) == 8000
    uniform = _draws(UniformLengths(kind="uniform", min=1500, max=2500), 1000)
    assert min(uniform) >= 1500 and max(uniform) <= 2500 and len(set(uniform)) > 5
    assert set(_draws(UniformLengths(kind="uniform", min=150, max=180), 200)) <= set(range(150, 181))
    assert set(_draws(FixedLengths(kind="fixed", words=3333), 50)) == {3333}
    assert 0.0 <= draw_unit(7, "x") < 1.0 and draw_unit(7, "x") == draw_unit(7, "x") != draw_unit(7, "x", 1)


def test_assign_lengths_sources():
    items = [
        {"instruction": "Write a guide to tea.", "target_words": 1500},
        {"instruction": "Write a 4000-word history of tea."},
        {"instruction": "写一篇两千字的散文", "target_words": None},
        {"instruction": "Write a story about ships."},
        {"instruction": "Write a story about ships."},
    ]
    out = assign_lengths(items, LongWriter6kLengths(), seed=3)
    assert [o["source"] for o in out] == ["given", "parsed", "parsed", "drawn", "drawn"]
    assert [o["target_words"] for o in out[:3]] == [1500, 4000, 2000]
    assert out[3]["target_words"] != out[4]["target_words"]  # a repeated instruction draws again
    # A rebuild with the items in another order (or more items) draws the same per instruction.
    again = assign_lengths([items[3], {"instruction": "New one."}, items[4]], LongWriter6kLengths(), seed=3)
    assert [again[0]["target_words"], again[2]["target_words"]] == [out[3]["target_words"], out[4]["target_words"]]
    assert assign_lengths(items[3:4], FixedLengths(kind="fixed", words=2500)) == [{"target_words": 2500, "source": "drawn"}]


def test_length_distribution_params_are_validated():
    base = {"items": [{"instruction": "Write a story."}]}
    params = dataset_kind.DatasetParams.model_validate(base)
    assert params.length_distribution.kind == "longwriter6k" and params.seed == 0 and params.state_length is True
    ok = dataset_kind.DatasetParams.model_validate({**base, "length_distribution": {"kind": "uniform", "min": 2000, "max": 4000}})
    assert ok.length_distribution.bounds() == (2000, 4000)
    for bad in ({"kind": "uniform", "min": 5000, "max": 4000}, {"kind": "fixed", "words": 0}, {"kind": "normal"},
                {"kind": "fixed", "words": 100, "max": 3}, {"kind": "uniform", "min": 10}):
        with pytest.raises(ValidationError):
            dataset_kind.DatasetParams.model_validate({**base, "length_distribution": bad})
    context = {"max_target_words": 20_000}
    with pytest.raises(ValidationError, match="max_target_words is 20000"):
        dataset_kind.DatasetParams.model_validate({**base, "length_distribution": {"kind": "fixed", "words": 30_000}},
                                                  context=context)
    dataset_kind.DatasetParams.model_validate(base, context=context)  # the default is capped when drawn


# ---- a build, end to end with instant children ------------------------------------------------------


REFUSAL = "I'm sorry, but I can't help with that request."


class InstantChildren:
    """Job services whose child write jobs finish at once, with a text of the target's length
    (a refusal for instructions that mention "forbidden")."""

    def __init__(self):
        self.spawned: list[dict] = []
        self.jobs: list[ChildJob] = []

    async def spawn_children(self, parent_id, kind, params_list, priority):
        assert kind == "write"
        for params in params_list[len(self.jobs):]:
            self.spawned.append(params)
            target = params.get("target_words") or parse_target_words(params["instruction"]) or 1000
            text = REFUSAL if "forbidden" in params["instruction"] else _text(len(self.jobs), target)
            result = {"text": text, "word_count": count_words(text), "target_words": target, "language": "en"}
            self.jobs.append(ChildJob(id=f"c{len(self.jobs)}", status="succeeded", params=params, result=result))
        return [job.id for job in self.jobs]

    async def children_status(self, parent_id):
        return {"succeeded": len(self.jobs)}

    async def children(self, parent_id, *, finished_only=False, exclude=()):
        return [job for job in self.jobs if job.id not in set(exclude)]

    async def load_document(self, document_id):
        raise LookupError(document_id)

    async def load_job_result(self, job_id):
        raise LookupError(job_id)


async def _build(tmp_path, **params):
    services = InstantChildren()
    settings = Settings(longform_data_dir=str(tmp_path), max_target_words=50_000)
    ctx = JobContext(None, store=MemoryStepStore(), settings=settings, services=services, job_id="d1")
    parsed = dataset_kind.DatasetParams.model_validate(params, context={"max_target_words": 50_000})
    result = await dataset_kind.run(ctx, parsed)
    return services, result


ITEMS = [
    {"instruction": "Write a guide to lighthouses.", "target_words": 1200},
    {"instruction": "Write a 1500-word history of the sea."},
    {"instruction": "Write a story about a lighthouse keeper."},
    {"instruction": "Write something forbidden."},
]


async def test_build_draws_states_and_records_lengths(tmp_path):
    services, result = await _build(tmp_path / "a", items=ITEMS, write={"method": "single"},
                                    gates={"length_tolerance": None}, formats=["longwriter", "alpaca"], seed=5)
    spawned = services.spawned
    assert spawned[0] == {"instruction": "Write a guide to lighthouses.", "target_words": 1200, "method": "single"}
    assert spawned[1] == {"instruction": "Write a 1500-word history of the sea.", "target_words": None, "method": "single"}
    drawn = spawned[2]["target_words"]
    assert 2000 <= drawn <= 32_000 and drawn % 100 == 0
    assert spawned[2]["instruction"] == f"Write a story about a lighthouse keeper. (about {drawn:,} words)"
    assert [x.model_dump() for x in result.lengths] == [
        {"target_words": 1200, "source": "given"}, {"target_words": 1500, "source": "parsed"},
        {"target_words": drawn, "source": "drawn"}, {"target_words": spawned[3]["target_words"], "source": "drawn"},
    ]
    assert result.length_sources == {"given": 1, "parsed": 1, "drawn": 2}
    # The refusal is gated out and counted.
    assert result.stats["gates"]["refusal"] == 1 and result.kept == 3
    users = [json.loads(line)["messages"][0]["content"]
             for line in open(result.files["longwriter"], encoding="utf-8")]
    assert users == ["Write a guide to lighthouses. (about 1,200 words)", "Write a 1500-word history of the sea.",
                     spawned[2]["instruction"]]
    # The same seed draws the same lengths in a rebuild; another seed draws others.
    again, _ = await _build(tmp_path / "b", items=ITEMS, write={"method": "single"}, seed=5)
    assert again.spawned == spawned
    other, _ = await _build(tmp_path / "c", items=ITEMS, write={"method": "single"}, seed=6)
    assert other.spawned[2]["target_words"] != drawn or other.spawned[3]["target_words"] != spawned[3]["target_words"]


async def test_build_without_stated_lengths_and_with_a_fixed_distribution(tmp_path):
    services, result = await _build(tmp_path, items=ITEMS[:3], state_length=False, gates={"length_tolerance": None},
                                    length_distribution={"kind": "fixed", "words": 2500})
    assert services.spawned[2]["target_words"] == 2500
    assert services.spawned[2]["instruction"] == "Write a story about a lighthouse keeper. (about 2,500 words)"
    users = [json.loads(line)["messages"][0]["content"] for line in open(result.files["longwriter"], encoding="utf-8")]
    assert users == [item["instruction"] for item in ITEMS[:3]]  # the build's own instructions, as given
    records, _stats = dataset_kind.build_export(services.jobs, GateSettings(length_tolerance=None), "longwriter")
    assert records[2]["messages"][0]["content"] == services.spawned[2]["instruction"]


async def test_one_target_for_every_item_from_the_write_params(tmp_path):
    services, result = await _build(tmp_path, items=ITEMS[2:3], write={"target_words": 3000})
    assert services.spawned == [{"instruction": ITEMS[2]["instruction"], "target_words": 3000}]
    assert result.length_sources == {"given": 1, "parsed": 0, "drawn": 0}


# ---- refusals -------------------------------------------------------------------------------------

_BODY = " ".join(["The river ran quietly through the valley, carrying the stories of the town with it."] * 40)
_BODY_ZH = "河流静静地流过山谷，带走了小镇的故事。" * 60

REFUSALS = [
    "I'm sorry, but I can't help with that.",
    "I’m sorry, but I cannot fulfill this request. " + _BODY,
    "As an AI language model, I cannot write content that promotes violence. " + _BODY,
    "I'm sorry, but as an AI developed by OpenAI, I can't generate that content.",
    "Sorry, I can't write that story.",
    "I apologize, but I am unable to provide a 10,000-word essay in one response. Here is a shorter one. " + _BODY,
    "I cannot fulfill your request to write this article.",
    "I can't assist with that request. " + _BODY,
    "Unfortunately, I am unable to write that. " + _BODY,
    "# Report\n\nI'm sorry, but I can't write this report.",
    "**I'm sorry, but I can't help with this.**",
    "Thank you for your message. I can't write a story about that, but I could write a poem about friendship.",
    "抱歉，我无法满足您的要求。",
    "很抱歉，作为一个AI语言模型，我不能为您撰写这类内容。" + _BODY_ZH,
    "对不起，我不能提供这样的内容。",
    "作为人工智能助手，我无法生成此类内容。",
    "谢谢你的提问。我无法写这篇文章。",
]

NOT_REFUSALS = [
    _BODY + ' "I\'m sorry, but I can\'t help you," she said. ' + _BODY,   # dialogue deep in the text
    _BODY + " I'm sorry, but I can't help with that. " + _BODY,          # past the head of a long answer
    '"I\'m sorry, but I can\'t help you," the old keeper said, closing the door. ' + _BODY,  # opening dialogue
    "“对不起，我无法帮你。”他说完就走了。" + _BODY_ZH,
    "Dear Ms. Chen,\n\nI'm sorry, but I cannot attend the conference next week. " + _BODY,
    "Dear customer,\n\nI'm sorry, but I cannot provide the refund you requested. " + _BODY,
    "As an AI language model, I don't have personal experiences, but here is an essay. " + _BODY,
    "I can't help thinking about the sea. " + _BODY,
    "I can't write anymore. The words won't come. " + _BODY,
    "I am sorry. I can't stop thinking about you. " + _BODY,
    "很抱歉，我无法参加您的婚礼。" + _BODY_ZH,
    "Here is a haiku:\nold pond, a frog jumps\nthe sound of water",
    "",
]


@pytest.mark.parametrize("text", REFUSALS)
def test_refusals_are_detected(text):
    assert is_refusal(text)


@pytest.mark.parametrize("text", NOT_REFUSALS)
def test_writing_is_not_a_refusal(text):
    assert not is_refusal(text)


def test_refusal_gate_counts_and_can_be_turned_off():
    samples = [_sample("Write", None, _text(1, 800)), _sample("Write", None, "I’m sorry, but I cannot fulfill this request. " + _text(4, 400)),
               _sample("Write", None, _text(2, 600) + ' "I\'m sorry, but I can\'t help you," she said. ' + _text(3, 600)),
               _sample("Write", None, "抱歉，我无法满足您的要求。")]
    kept, counts = apply_gates(samples, GateSettings())
    assert list(counts) == list(GATES) and counts["refusal"] == 2 and sum(counts.values()) == 2
    assert [s.dropped_by for s in samples] == [None, "refusal", None, "refusal"]
    kept, counts = apply_gates([_sample("Write", None, s.text) for s in samples], GateSettings(drop_refusals=False))
    assert counts["refusal"] == 0 and len(kept) == 4


def test_cli_length_spec():
    from api.cli.base import CliFailure
    from api.cli.batch import parse_length_spec

    assert parse_length_spec("longwriter6k") == {"kind": "longwriter6k"}
    assert parse_length_spec("uniform:2000-8000") == {"kind": "uniform", "min": 2000, "max": 8000}
    assert parse_length_spec("fixed:3000") == {"kind": "fixed", "words": 3000}
    for bad in ("normal", "uniform:2000", "fixed:x", "longwriter6k:3"):
        with pytest.raises(CliFailure):
            parse_length_spec(bad)
