"""Self-Lengthen data builds (the `dataset` recipe `selflengthen`): recipe validation, the
self-instruct acceptance rule and its growing pool, length-biased sampling (drop_short) and
its early fates, ext_sft line dropping, length demands (intervals, no inversion), the exports;
a whole build on a scripted model with in-memory child jobs (and its exact replay), then a
small build through the real job system on the fake server (its figures are plumbing)."""
from __future__ import annotations

import asyncio
import json
import random
import re
import zlib
from statistics import fmean

import httpx
import pytest

from agents import selflengthen_build as slb
from agents.context import ChildJob, JobContext, MemoryStepStore
from agents.dataset_kind import DatasetParams
from agents.kinds import InvalidParams, validate_params
from agents.length_target import parse_chinese_number
from agents.llm.types import GenOptions, LLMResult
from agents.metrics.longen import constraint_interval
from agents.settings import Settings
from agents.text import count_words_selflengthen
from tests.api_server import running_api, wait_for_job
from tests.db_fixtures import sqlite_url
from tests.test_cli import clean_env, run  # noqa: F401  (clean_env: an autouse fixture)

SEEDS = ["Write a long essay on the history of bridges and the engineers who built them.",
         "Write a detailed report on how a small town could start a community orchard."]
ITEMS = [{"instruction": f"Write a long feature article about harbour number {i} and its fishing families."}
         for i in range(3)]


def _settings() -> Settings:
    return Settings(max_target_words=50_000)


# -- the recipe's params ---------------------------------------------------------------------------------


@pytest.mark.parametrize("body, field", [
    ({"recipe": "nope", "items": ITEMS}, "recipe"),
    ({"items": ITEMS, "length_demands": True}, "length_demands applies to the selflengthen recipe"),
    ({"items": ITEMS, "extender_model": "ext_sft"}, "extender_model applies to the selflengthen recipe"),
    ({"recipe": "selflengthen", "items": ITEMS, "write": {"method": "single"}}, "write applies to the longwriter recipe"),
    ({"recipe": "selflengthen", "items": ITEMS, "state_length": False}, "state_length applies to the longwriter"),
    ({"recipe": "selflengthen", "items": ITEMS, "formats": ["long", "alpaca"]}, "format 'alpaca'"),
    ({"items": ITEMS, "formats": ["gen_sft"]}, "format 'gen_sft'"),
    ({"recipe": "selflengthen", "items": ITEMS, "lengthen": {"text": "x"}}, "lengthen.text is set by the selflengthen"),
    ({"recipe": "selflengthen", "items": ITEMS, "lengthen": {"temperature": 5}}, "temperature"),
    ({"recipe": "selflengthen", "items": ITEMS, "protocol": "fast"}, "protocol"),
    ({"recipe": "selflengthen", "items": ITEMS, "selflengthen": {"extensions": 0}}, "selflengthen.extensions"),
    ({"recipe": "selflengthen", "items": ITEMS, "generator_model": " "}, "generator_model"),
])
def test_bad_recipe_params_name_their_field(body, field):
    with pytest.raises(InvalidParams) as caught:
        validate_params("dataset", body, _settings())
    assert field in str(caught.value)


def test_recipe_defaults():
    longwriter = DatasetParams.model_validate({"items": ITEMS})
    assert longwriter.recipe == "longwriter" and longwriter.formats == ["longwriter"]
    built = DatasetParams.model_validate({"recipe": "selflengthen", "seeds": SEEDS, "count": 3,
                                          "lengthen": {"micro_iterations": 2}})
    assert built.formats == ["long", "gen_sft", "ext_sft", "sharegpt"] and built.protocol is None
    assert slb.lengthen_base(built) == {"micro_iterations": 2, "protocol": "paper", "generator_model": None,
                                        "extender_model": None}
    assert built.selflengthen.initial_answers == 2 and built.selflengthen.extensions == 2


# -- self-instruct --------------------------------------------------------------------------------------


def test_the_acceptance_rule():
    assert slb.instruction_rejection("", set()) == "empty"
    assert slb.instruction_rejection("Write an essay", set()) == "too_short"  # 3 words
    assert slb.instruction_rejection("Write a long essay", set()) is None  # 4
    assert slb.instruction_rejection(" ".join(["word"] * 499), set()) is None
    assert slb.instruction_rejection(" ".join(["word"] * 500), set()) == "too_long"
    assert slb.instruction_rejection("写一篇文", set()) is None  # Self-Lengthen's count: 4 characters
    assert slb.instruction_rejection("写三篇", set()) == "too_short"
    pool = {slb.ds.normalize_text("Write a long essay.")}
    assert slb.instruction_rejection("write a LONG essay", pool) == "duplicate"
    assert slb.accepts("Write a long essay", True) and not slb.accepts("Write a long essay", False)
    assert not slb.accepts("Write an essay", True)
    assert slb.clean_instruction(" Write a guide to tea.\nInstruction 4: Write another") == "Write a guide to tea."
    assert slb.clean_instruction("Instruction 3: Write a guide to tea.") == "Write a guide to tea."


def _words(tag: str, n: int) -> str:
    return " ".join(f"{tag}{i}x" for i in range(n))


def _paras(tag: str, sizes: list[int]) -> str:
    return "\n\n".join(_words(f"{tag}p{k}", n) + "." for k, n in enumerate(sizes))


class Scripted:
    """Answers by request shape; every answer is a function of the request alone (calls run
    concurrently), so a rerun asks the same and gets the same."""

    model_name = "scripted"
    context_window = 32768

    def __init__(self, judge_yes=lambda h: h % 3 != 0, rewrite=True):
        self.calls: list[tuple[str, list[dict], GenOptions]] = []
        self.judge_yes = judge_yes
        self.rewrite = rewrite

    async def chat(self, messages, options=None):
        options = options or GenOptions()
        prompt = messages[-1]["content"]
        h = zlib.crc32((prompt + str(options.seed)).encode())
        schema = json.dumps(options.json_schema or {})
        if '"answer"' in schema:
            kind, text = "judge", json.dumps({"answer": "yes" if self.judge_yes(h) else "no"})
        elif '"query"' in schema:
            constraint = re.search(r"a response of (.+?)\. If the query", prompt).group(1)
            query = prompt.split("Query:\n", 1)[1].split("\n\nReply with JSON", 1)[0]
            kind, text = "demand", json.dumps({"query": f"{query} Write {constraint}." if self.rewrite else query})
        elif (options.extra_body or {}).get("continue_final_message"):
            kind, text = "instruct", f" Write a detailed history of harbour {h % 100_000} and the boats that use it."
        else:
            kind, text = "answer", _paras(f"a{h % 100_000}", [20 + h % 40, 30, 25 + h % 17])
        self.calls.append((kind, [dict(m) for m in messages], options))
        return LLMResult(text=text, finish_reason="stop", prompt_tokens=10, completion_tokens=len(text.split()),
                         latency_s=0.0, model=self.model_name)

    async def count_tokens(self, text):
        return len(text.split())

    def of(self, kind):
        return [(messages, options) for k, messages, options in self.calls if k == kind]


def _ctx(llm, store=None, services=None, tmp_path=None, job_id="build"):
    settings = Settings(max_target_words=50_000, **({"longform_data_dir": str(tmp_path)} if tmp_path else {}))
    return JobContext(llm, store=store or MemoryStepStore(), settings=settings, services=services, job_id=job_id)


async def test_self_instruct_draws_from_the_growing_pool_and_replays_exactly():
    llm, store = Scripted(), MemoryStepStore()
    lp = slb.sl.LengthenParams(instruction="probe", protocol="paper")
    handed: list[tuple[int, str]] = []
    instruct = slb.SelfInstruct(_ctx(llm, store), SEEDS, 12, 10, lp, 7, "auto", lambda i, t: handed.append((i, t)),
                                window=4)
    accepted = await instruct.run()
    await asyncio.gather(*instruct.leftover)  # in flight when the 12th was accepted: finish, unjudged
    assert len(accepted) == 12 and [i for i, _ in handed] == list(range(12))
    assert [a["instruction"] for a in accepted] == [t for _, t in handed]
    assert [a["candidate"] for a in accepted] == sorted(a["candidate"] for a in accepted)
    # Every call is a step; the judge is structured output; the candidate call prefills the answer.
    written = {key: out for key, out in store.outputs.items() if key.startswith("instruct/")}
    judged = {key for key in store.outputs if key.startswith("judge/")}
    assert written and judged and len(judged) == instruct.stats["judge_calls"]
    messages, options = llm.of("instruct")[0]
    assert messages[-1]["role"] == "assistant" and messages[-1]["content"].startswith("Instruction 1: ")
    assert messages[-1]["content"].endswith("Instruction 3:") and "\nInstruction 4" in options.stop
    assert llm.of("judge")[0][1].json_schema == slb.JUDGE_SCHEMA
    # Candidate c drew two examples from the seeds and what was accepted before c - window.
    grew = False
    for key, out in written.items():
        c = int(key.split("/")[1])
        allowed = set(SEEDS) | {a["instruction"] for a in accepted if a["candidate"] < c - 4}
        assert len(out["examples"]) == 2 and set(out["examples"]) <= allowed
        grew = grew or not set(out["examples"]) <= set(SEEDS)
    assert grew  # later candidates saw generated instructions
    stats = instruct.stats
    assert stats["accepted"] == 12 and stats["rejected"]["judge_no"] > 0
    assert stats["candidates"] == 12 + sum(stats["rejected"].values())
    # Replay: no model call, the same instructions.
    again_llm = Scripted()
    again = await slb.SelfInstruct(_ctx(again_llm, store), SEEDS, 12, 10, lp, 7, "auto", lambda i, t: None,
                                   window=4).run()
    assert again == accepted and again_llm.calls == []


async def test_self_instruct_stops_at_its_budget():
    llm = Scripted(judge_yes=lambda h: False)
    lp = slb.sl.LengthenParams(instruction="probe", protocol="paper")
    instruct = slb.SelfInstruct(_ctx(llm), SEEDS, 3, 2, lp, 0, "auto", lambda i, t: None, window=4)
    assert await instruct.run() == []
    assert instruct.stats["candidates"] == 6 and instruct.stats["rejected"]["judge_no"] == 6


# -- drop_short ------------------------------------------------------------------------------------------


def test_drop_short_probabilities():
    assert slb.keep_probability(0, 100) == 0.0 and slb.keep_probability(20, 100) == 0.0  # r = 0.8 > 2^(-1/3)
    assert slb.keep_probability(21, 100) > 0.0 and slb.keep_probability(99, 100) == pytest.approx(1 - 2e-6)
    n = 400
    lengths = random.Random(1).sample(range(10_000), n)
    shortest = set(sorted(range(n), key=lambda i: lengths[i])[:int(0.2063 * n)])
    shares = []
    for seed in range(300):
        rng = random.Random(seed)
        keep = slb.drop_short(lengths, [rng.random() for _ in lengths])
        assert not any(keep[i] for i in shortest)  # the shortest ~21% are always dropped
        shares.append(sum(keep) / n)
    assert fmean(shares) == pytest.approx(0.595, abs=0.006)  # 1 - 2/4 * 2^(-4/3) ... = 0.5953
    # Seeded: the same draws keep the same samples; the longest are kept far more often.
    draws = [random.Random(5).random() for _ in lengths]
    assert slb.drop_short(lengths, draws) == slb.drop_short(lengths, draws)
    assert slb.sample_draw(3, "initial", "1/0") == slb.sample_draw(3, "initial", "1/0") != slb.sample_draw(4, "initial", "1/0")


def test_early_fates_are_final():
    rng = random.Random(2)
    for trial in range(40):
        n = rng.randint(5, 80)
        keys = [f"{i}/{k}" for i in range(n) for k in range(2)][:n]
        lengths = {key: rng.randint(100, 200) for key in keys}  # ties too
        draws = {key: rng.random() for key in keys}
        final = slb.drop_short_fates(lengths, draws)
        as_list = slb.drop_short([lengths[k] for k in sorted(keys, key=slb.key_order)],
                                 [draws[k] for k in sorted(keys, key=slb.key_order)])
        assert [final[k] for k in sorted(keys, key=slb.key_order)] == as_list
        order = keys[:]
        rng.shuffle(order)
        failing = set(rng.sample(keys, n // 10))  # never come: failed the filters
        decided_early = 0
        for done in range(1, n + 1):
            seen = {k: lengths[k] for k in order[:done] if k not in failing}
            fates = slb.drop_short_fates(seen, draws, pending=n - done)
            for key, fate in fates.items():
                if fate is not None:
                    decided_early += done < n
                    assert fate == slb.drop_short_fates({k: lengths[k] for k in keys if k not in failing}, draws)[key]
        assert decided_early or n < 20


# -- ext_sft line dropping -------------------------------------------------------------------------------


def test_ext_sft_drops_lines_with_p_0_8():
    text = "\n".join(f"line {i}" for i in range(2000))
    kept = slb.degrade_lines(text, "en", slb.rng_for(0, "ext_sft", "1/0/0"))
    lines = kept.split("\n")
    assert 0.77 < len(lines) / 2000 < 0.83 and lines == sorted(lines, key=lambda s: int(s.split()[1]))
    assert kept == slb.degrade_lines(text, "en", slb.rng_for(0, "ext_sft", "1/0/0"))  # seeded
    assert kept != slb.degrade_lines(text, "en", slb.rng_for(1, "ext_sft", "1/0/0"))
    zh = slb.degrade_lines("第一行\n第二行\n第三行", "zh", random.Random(0), keep=1.0)
    assert zh == "第一行\n\n第二行\n\n第三行"  # the Qwen version re-joins with blank lines
    assert slb.degrade_lines("a\n\nb", "en", random.Random(0), keep=1.0) == "a\n\nb"  # blank lines are lines


# -- length demands --------------------------------------------------------------------------------------


def test_length_demands_follow_the_reference_distribution_without_the_inversion():
    rng = random.Random(0)
    types: dict[str, int] = {}
    units: dict[int, int] = {}
    numerals = {"en": 0, "zh": 0}
    for n in range(8000):
        language = "zh" if n % 2 else "en"
        words = rng.randrange(2000, 8000)
        demand = slb.length_demand(words, language, rng)
        kind, numbers = demand["type"], demand["numbers"]
        types[kind] = types.get(kind, 0) + 1
        units[demand["unit"]] = units.get(demand["unit"], 0) + 1
        numerals[language] += demand["numerals"]
        assert all(2000 <= x <= 8000 for x in numbers)
        low, high = constraint_interval(kind, demand["constraint"])  # LonGen reads it back (Chinese numerals too)
        if kind == "above":
            assert words >= numbers[0] == low  # "more than" the rounded-down length: met
        elif kind == "below":
            assert words <= numbers[0] == high  # "less than" the rounded-up length: met
        elif kind == "range":
            assert low == numbers[0] <= words <= numbers[1] == high and numbers[0] < numbers[1]
        else:
            assert abs(words - numbers[0]) <= demand["unit"] / 2
        if language == "zh":
            word = {"about": "大约", "range": "至", "above": "大于", "below": "小于"}[kind]
            assert word in demand["constraint"] and demand["constraint"].endswith("字")
        else:
            assert demand["constraint"].endswith(" words")
    shares = {k: v / 8000 for k, v in types.items()}
    assert shares["about"] == pytest.approx(0.40, abs=0.02) and shares["range"] == pytest.approx(0.25, abs=0.02)
    assert shares["above"] == pytest.approx(0.10, abs=0.015) and shares["below"] == pytest.approx(0.25, abs=0.02)
    assert units[2000] / 8000 == pytest.approx(0.2, abs=0.02) and set(units) == {1000, 2000}
    assert numerals["en"] == 0 and numerals["zh"] / 4000 == pytest.approx(0.5, abs=0.03)
    # Outside the window (the reference keeps 2,000 <= words < 8,000): no demand.
    assert slb.length_demand(1999, "en", rng) is None and slb.length_demand(8000, "en", rng) is None
    assert slb.length_demand(450, "en", random.Random(0), window=(300, 8000))["unit"] == 100


def test_constraint_texts_and_chinese_numerals():
    assert slb.constraint_text("above", [3000], "zh", numerals=True) == "大于三千字"
    assert slb.constraint_text("below", [4000], "zh") == "小于4000字"
    assert slb.constraint_text("range", [2000, 3000], "zh", numerals=True) == "二千字至三千字"
    assert slb.constraint_text("about", [5000], "en") == "about 5000 words"
    assert slb.constraint_text("range", [2000, 3000], "en") == "2000-3000 words"
    for n, text in ((10, "十"), (15, "十五"), (2000, "二千"), (2500, "二千五百"), (3050, "三千零五十"),
                    (12000, "一万二千"), (10_005, "一万零五")):
        assert slb.chinese_numeral(n) == text
    # Every length a demand can state reads back (LonGen's parser, agents.length_target).
    for n in [*range(10, 100, 10), *range(100, 1000, 100), *range(1000, 100_000, 1000)]:
        assert parse_chinese_number(slb.chinese_numeral(n)) == n
    assert slb.states_constraint("请写一篇大约三千字的文章", [3000])
    assert not slb.states_constraint("Write an essay.", [3000])
    assert slb.appended_constraint("Write an essay.", "about 3000 words", "en").endswith("be about 3000 words.")


# -- exports ---------------------------------------------------------------------------------------------


def _built(extended_text: str = "Grown.\n\nGrown more."):
    """Stored steps and children of a finished build: item 0's first answer kept, extended twice."""
    initial = "Line one.\nLine two.\nLine three."
    steps = {
        "items": {"items": [{"instruction": "Write about tea."}], "rejected_lines": [], "self_instruct": None},
        "sample/initial": {"kept": [{"key": "0/0", "item": 0, "answer": 0, "instruction": "Write about tea.",
                                     "target_words": None, "language": "en", "text": initial}],
                           "stats": {"requested": 2, "answered": 2, "failed": 0, "generator_calls": 3,
                                     "regenerations": 1, "rejected_by_filter": {"terminal_punctuation": 1}},
                           "sampling": {"candidates": 2, "kept": 1, "dropped": 1}},
        "spawn/0": {"answers": ["0/0"], "ids": ["c0", "c1"]},
    }
    result = {"text": extended_text, "language": "en", "gate": {"passed": True},
              "iterations": [{"accepted": True, "reason": None}, {"accepted": False, "reason": "not longer"}]}
    children = [ChildJob("c0", "succeeded", {"instruction": "Write about tea.", "text": initial}, result),
                ChildJob("c1", "failed", {"instruction": "Write about tea.", "text": initial}, None,
                         error="ValueError: the final gate failed: the best text has 3 words, not more than 1.2 x "
                               "the initial answer's 3 (1.00x after 3 micro-iterations, 0 accepted)")]
    return steps, children, initial


def test_exports_in_every_format():
    steps, children, initial = _built()
    params = {"recipe": "selflengthen", "seed": 0, "selflengthen": {"drop_short": False}}
    records, stats = slb.export(params, steps, children)
    assert records["long"] == [{"query": "Write about tea.", "response": initial},
                               {"query": "Write about tea.", "response": "Grown.\n\nGrown more."}]
    assert records["sharegpt"][1] == {"conversations": [{"from": "human", "value": "Write about tea."},
                                                        {"from": "gpt", "value": "Grown.\n\nGrown more."}]}
    assert records["gen_sft"] == [{"instruction": "Write about tea.", "input": "", "output": "Grown.\n\nGrown more."}]
    ext = records["ext_sft"][0]
    assert ext["input"] == "" and ext["output"] == "Grown.\n\nGrown more."
    assert "Instruction: Write about tea." in ext["instruction"] and "Original outline:" in ext["instruction"]
    outline = ext["instruction"].split("Original outline:\n\n", 1)[1]
    assert set(outline.split("\n")) <= set(initial.split("\n"))  # lines of the initial answer, some dropped
    assert stats["formats"] == {"long": 2, "gen_sft": 1, "ext_sft": 1, "sharegpt": 2}
    assert stats["final"] is False  # no sample/extended step yet: provisional
    assert stats["extension"]["failed_gate"] == 1 and stats["extension"]["passed_gate"] == 1
    assert stats["extension"]["rejected_candidates"] == {"not longer": 1}
    assert stats["extension"]["rejected_candidates_reason_unrecorded"] == 3
    assert stats["initial"]["regenerations"] == 1 and stats["sampling"]["initial"]["dropped"] == 1
    # controlled: Longform's extend template; one format at a time.
    only, _ = slb.export({**params, "protocol": "controlled"}, steps, children, "ext_sft")
    assert list(only) == ["ext_sft"] and "You improve drafts" in only["ext_sft"][0]["instruction"]
    # Length demands: a pair without its demand step yet is left out (pending), one with it is rewritten.
    demanding = {**params, "length_demands": True, "selflengthen": {"drop_short": False,
                                                                     "length_demand_words": {"min": 1, "max": 100}}}
    steps["demand/0/0"] = {"type": "about", "constraint": "about 10 words", "numbers": [10], "words": 6, "unit": 10,
                           "numerals": False, "query": "Write about tea in about 10 words.", "via": "model"}
    records, stats = slb.export(demanding, steps, children)
    assert records["long"] == [{"query": "Write about tea in about 10 words.", "response": initial}]
    assert stats["length_demands"]["pending"] == 1 and stats["length_demands"]["rewritten_by_model"] == 1


# -- a whole build, scripted, with in-memory children ----------------------------------------------------


class Children:
    """Child jobs held in memory: a `lengthen` child "runs" at once (its text grown by a
    paragraph, or failing its gate every fifth), idempotently per index like the service."""

    def __init__(self):
        self.jobs: dict[int, ChildJob] = {}
        self.spawn_calls: list[tuple[int, int]] = []

    async def spawn_children(self, parent_id, kind, params_list, priority, start=0):
        assert kind == "lengthen"
        self.spawn_calls.append((start, len(params_list)))
        ids = []
        for index, params in enumerate(params_list, start):
            slb.sl.LengthenParams.model_validate(params)
            if index in self.jobs:
                assert self.jobs[index].params == params  # the same request for the same child
            else:
                grown = params["text"] + "\n\n" + _words(f"g{params['seed'] % 10_000}", 10 + params["seed"] % 50) + "."
                if params["seed"] % 5 == 0:
                    job = ChildJob(f"c{index}", "failed", params, None, error="ValueError: the final gate failed: "
                                   "... (1.00x after 3 micro-iterations, 0 accepted)")
                else:
                    job = ChildJob(f"c{index}", "succeeded", params, {
                        "text": grown, "language": "en", "gate": {"passed": True},
                        "iterations": [{"accepted": True, "reason": None}, {"accepted": False, "reason": "repetition"}]})
                self.jobs[index] = job
            ids.append(self.jobs[index].id)
        return ids

    async def children_status(self, parent_id):
        counts: dict[str, int] = {}
        for job in self.jobs.values():
            counts[job.status] = counts.get(job.status, 0) + 1
        return counts

    async def children(self, parent_id, *, finished_only=False, exclude=()):
        return [self.jobs[i] for i in sorted(self.jobs) if self.jobs[i].id not in set(exclude)]


async def test_a_scripted_build_spawns_kept_answers_early_and_replays_exactly(tmp_path):
    params = DatasetParams.model_validate({
        "recipe": "selflengthen", "seeds": SEEDS, "count": 16, "seed": 3, "length_demands": True,
        "selflengthen": {"instruct_window": 8, "length_demand_words": {"min": 50, "max": 8000}},
    }, context={"settings": _settings(), "max_target_words": 50_000})
    llm, store, children = Scripted(), MemoryStepStore(), Children()
    result = await slb.run(_ctx(llm, store, children, tmp_path), params)
    stats = result["stats"]
    assert result["items"] == 16 and stats["self_instruct"]["accepted"] == 16
    # Two answers per instruction (each a step), drop_short over them, two children per kept one.
    assert stats["initial"]["requested"] == 32 and len(llm.of("answer")) == 32
    sampled = store.outputs["sample/initial"]
    kept_keys = [a["key"] for a in sampled["kept"]]
    answers = {f"{i}/{k}": store.outputs[f"answer/{i}/{k}/initial/1"]["text"] for i in range(16) for k in range(2)}
    fates = slb.drop_short_fates({key: len(t) for key, t in answers.items()},
                                 {key: slb.sample_draw(3, "initial", key) for key in answers})
    assert kept_keys == [key for key in sorted(answers, key=slb.key_order) if fates[key]]
    assert 0 < len(kept_keys) < 32 and stats["sampling"]["initial"]["kept"] == len(kept_keys)
    batches = [store.outputs[key] for key in sorted(store.outputs) if key.startswith("spawn/")]
    assert sorted(a for b in batches for a in b["answers"]) == sorted(kept_keys)
    assert len(batches) >= 2 and stats["extension"]["spawn_batches"] == len(batches)  # the first before all answers
    assert len(children.jobs) == 2 * len(kept_keys) == stats["extension"]["children"]
    assert [start for start, _ in children.spawn_calls] == [sum(n for _, n in children.spawn_calls[:k])
                                                            for k in range(len(children.spawn_calls))]
    for job in children.jobs.values():
        assert job.params["protocol"] == "paper" and job.params["text"] in answers.values()
    assert stats["extension"]["failed_gate"] == sum(j.status == "failed" for j in children.jobs.values())
    assert stats["extension"]["rejected_candidates"] == {"repetition": stats["extension"]["passed_gate"]}
    ext = stats["sampling"]["extended"]
    assert ext["candidates"] == stats["extension"]["passed_gate"] and ext["kept"] + ext["dropped"] == ext["candidates"]
    # Length demands rewritten by the model (each a step), the files as the stats say.
    assert stats["length_demands"]["rewritten_by_model"] == stats["length_demands"]["demands"] > 0
    assert stats["formats"]["long"] == stats["length_demands"]["demands"]
    for fmt in slb.FORMATS:
        lines = open(result["files"][fmt], encoding="utf-8").read().splitlines()
        assert len(lines) == stats["formats"][fmt]
    long_rows = [json.loads(line) for line in open(result["files"]["long"], encoding="utf-8")]
    demands = {key: out for key, out in store.outputs.items() if key.startswith("demand/")}
    assert {r["query"] for r in long_rows} == {d["query"] for d in demands.values()}
    for d in demands.values():
        assert slb.states_constraint(d["query"], d["numbers"])
    # Replay on the same steps and children: no model call, no new child, the same result.
    again_llm = Scripted()
    again = await slb.run(_ctx(again_llm, store, children, tmp_path), params)
    assert again_llm.calls == [] and len(children.jobs) == 2 * len(kept_keys)
    assert again["stats"] == stats and again["files"] == result["files"]


# -- through the job system, on the fake server ------------------------------------------------------------


@pytest.fixture
def api(tmp_path, fake_llm):
    settings = Settings(longform_data_dir=str(tmp_path), database_url=sqlite_url(tmp_path), llm_endpoints=fake_llm.base_url)
    with running_api(settings) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield client


def test_bad_recipe_is_refused_over_rest_and_nothing_is_stored(api):
    refused = api.post("/v1/datasets", json={"recipe": "agentwrite", "items": ITEMS})
    assert refused.status_code == 422 and "recipe" in refused.json()["detail"]
    refused = api.post("/v1/datasets", json={"recipe": "selflengthen", "items": ITEMS, "generator_model": "gen_sft"})
    assert refused.status_code == 422 and "generator_model" in refused.json()["detail"]  # not served
    assert api.get("/v1/jobs").json()["total"] == 0


def test_a_small_build_through_the_service_exports_every_format(api, tmp_path):
    body = {"recipe": "selflengthen", "seeds": SEEDS, "count": 4, "length_demands": True,
            "selflengthen": {"length_demand_words": {"min": 100, "max": 8000}}}
    created = api.post("/v1/datasets", json=body)
    assert created.status_code == 202, created.text
    job = wait_for_job(api, created.json()["id"], timeout=120)
    assert job["status"] == "succeeded", job["error"]
    result, stats = job["result"], job["result"]["stats"]
    assert result["recipe"] == "selflengthen" and result["items"] == 4 and stats["protocol"]["name"] == "paper"
    assert stats["initial"]["requested"] == 8 and stats["self_instruct"]["accepted"] == 4
    kids = api.get("/v1/jobs", params={"parent_id": job["id"], "limit": 500}).json()["items"]
    assert len(kids) == stats["extension"]["children"] == 2 * stats["sampling"]["initial"]["kept"]
    assert {k["kind"] for k in kids} == {"lengthen"}
    rows = {}
    for fmt in slb.FORMATS:
        exported = api.get(f"/v1/datasets/{job['id']}/export", params={"format": fmt})
        assert exported.status_code == 200
        rows[fmt] = [json.loads(line) for line in exported.text.splitlines()]
        assert len(rows[fmt]) == stats["formats"][fmt]
        assert exported.text == open(result["files"][fmt], encoding="utf-8").read()  # what the job wrote
    assert rows["long"] and all(set(r) == {"query", "response"} and r["response"].strip() for r in rows["long"])
    assert [(r["conversations"][0]["value"], r["conversations"][1]["value"]) for r in rows["sharegpt"]] == \
        [(r["query"], r["response"]) for r in rows["long"]]
    for fmt in ("gen_sft", "ext_sft"):
        assert all(set(r) == {"instruction", "input", "output"} and r["input"] == "" for r in rows[fmt])
    assert [r["output"] for r in rows["gen_sft"]] == [r["output"] for r in rows["ext_sft"]]
    assert all("Original outline:" in r["instruction"] for r in rows["ext_sft"])  # the reference's prompt file
    for r in rows["long"]:
        assert count_words_selflengthen(r["response"]) >= 100  # only pairs in the demand window
    assert api.get(f"/v1/datasets/{job['id']}/stats").json()["formats"] == stats["formats"]
    default = api.get(f"/v1/datasets/{job['id']}/export")
    assert default.text == open(result["files"]["long"], encoding="utf-8").read()
    wrong = api.get(f"/v1/datasets/{job['id']}/export", params={"format": "longwriter"})
    assert wrong.status_code == 422 and "selflengthen" in wrong.json()["detail"]
    # The CLI: export by format; --method belongs to the longwriter recipe.
    url = str(api.base_url)
    exported = run(["dataset", "export", job["id"], "--format", "gen_sft"], LONGFORM_URL=url)
    assert exported.exit_code == 0 and [json.loads(line) for line in exported.stdout.splitlines()] == rows["gen_sft"]
    refused = run(["dataset", "build", "--recipe", "selflengthen", "--seed", SEEDS[0], "--count", "2", "--method",
                   "single"], LONGFORM_URL=url)
    assert refused.exit_code == 2 and "--method applies to the longwriter recipe" in refused.stderr


def test_the_cli_builds_with_the_recipe(api, tmp_path):
    out = tmp_path / "long.jsonl"
    built = run(["dataset", "build", "--recipe", "selflengthen", "--seed", SEEDS[0], "--seed", SEEDS[1], "--count", "2",
                 "--protocol", "paper", "--format", "long", "--format", "gen_sft", "-p", "micro_iterations=2",
                 "--out", str(out)], LONGFORM_URL=str(api.base_url))
    assert built.exit_code == 0, built.output
    dataset_id = built.stdout.strip().splitlines()[-1]
    job = api.get(f"/v1/jobs/{dataset_id}").json()
    assert job["params"]["recipe"] == "selflengthen" and job["params"]["formats"] == ["long", "gen_sft"]
    assert job["params"]["lengthen"] == {"micro_iterations": 2} and job["params"]["protocol"] == "paper"
    assert sorted(job["result"]["files"]) == ["gen_sft", "long", "stats"]
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == job["result"]["stats"]["formats"]["long"] and all(set(r) == {"query", "response"} for r in rows)
    kids = api.get("/v1/jobs", params={"parent_id": dataset_id, "limit": 500}).json()["items"]
    assert kids and all(api.get(f"/v1/jobs/{k['id']}").json()["params"]["micro_iterations"] == 2 for k in kids[:3])
