"""Self-Lengthen data builds: the `selflengthen` recipe of the `dataset` job kind.

One macro-iteration of Self-Lengthen's data pipeline (spec part A), as one `dataset` job:

1. Instructions. Given (items, JSONL, document), or self-instructed from seed prompts:
   each candidate is written after two examples drawn at random (seeded) from the pool
   (seeds plus the instructions accepted so far) by a chat request whose answer is
   prefilled with "Instruction 1: A / Instruction 2: B / Instruction 3:" (vLLM's
   continue_final_message; a plain chat request with the examples inline when the server
   refuses a prefill), then judged by the base model with a yes/no structured-output call
   (suited to an article of more than 2000 words?). A candidate is accepted when the judge
   says yes and 3 < words < 500 (Self-Lengthen's counter) and it is not a duplicate; the
   first `count` accepted, in candidate order, are the instructions. Candidates run
   concurrently, at most `instruct_window` (128) at a time, and candidate c draws from the
   seeds plus the instructions accepted among candidates before c - window: the pool grows
   as candidates are decided (as in the reference, whose threads see the pool as it grows)
   and yet every draw is fixed by stored outputs, so a rerun or a resumed job draws the
   same examples. Candidates are launched while the accepted ones plus what those in flight
   will likely bring (at the acceptance rate so far) fall short of `count`; the ones still
   in flight when `count` is reached finish their call unjudged. At most `instruct_attempts` x `count`
   candidates in all (the reference retries each instruction up to 10 times). Steps
   `instruct/{c}`, `judge/{c}`; self-instruct calls go before the answers where the server
   schedules by priority (they are the build's critical path).
   The self-instruct and judge calls always use the base model (`model` unset), as in the
   reference, also in a second round.
2. Initial answers, in this job: every instruction answered `initial_answers` (2) times by
   the Generator (`generator_model`; the instruction alone), each regenerated while it fails
   the quality filters (`agents.length_control.failing_filter`), up to the lengthen param
   `max_initial_attempts` (20). Steps `answer/{i}/{k}/initial/{a}` (the `lengthen` kind's
   own code, `selflengthen.initial_answer`). An instruction's answers start as soon as it is
   accepted.
3. Length-biased sampling of the initial answers (`drop_short`, step `sample/initial`).
4. Extension, in child jobs: every kept initial answer is extended `extensions` (2) times,
   each by one `lengthen` child job with `text` given (the Extender, `extender_model`;
   `protocol` as the build's: `paper` by default here, since a data build is the published
   pipeline, while a lone `lengthen` job defaults to `controlled`). Under `paper` a child runs 3
   micro-iterations and fails unless its text is more than 1.2x the initial answer: that
   sample is dropped and counted (`failed_gate`). Under `controlled` a child reports the gate
   and the build drops what did not pass it all the same. An answer's children are spawned
   as soon as drop_short keeps it whatever the answers still to come turn out to be (each
   sample has its own seeded draw, so its fate is fixed once its rank can no longer move
   across its threshold: `drop_short_fates`), in batches, steps `spawn/{t}`: extension
   starts while the last answers are still being written, and the kept set is exactly
   drop_short's over all of them.
5. Length-biased sampling of the extended answers (step `sample/extended`).
6. Length demands (`length_demands: true`): each (query, response) pair of the `long` and
   `sharegpt` exports whose response has 2000 <= words < 8000 (`length_demand_words`) gets a
   constraint drawn as in the reference's add_length_control (about 0.40, range 0.25, above
   0.10, below 0.25; rounded to 1000, or 2000 with p = 0.2; clamped to the window; Chinese
   numerals half the time in Chinese) and the model rewrites the query to state it
   (structured output {"query"}; a rewrite that lacks the constraint's numbers is asked
   again, then the constraint sentence is appended instead; counted). Unlike the reference,
   "above" takes the rounded-down length and "below" the rounded-up one in both languages,
   so the response meets its constraint. Pairs outside the window are left out of those two
   exports (as the reference keeps only 2000-8000 words). Steps `demand/{key}`.

Counts for N instructions with the defaults: 2N initial answers, about 0.595 x 2N kept,
2 extensions of each (about 2.4N children), about 0.595 of the extensions that pass the gate
kept. Training data follows the reference (spec A.9):

- `long`: {"query", "response"} JSONL, the kept initial answers and then the kept
  extensions (the reference's collect_data gathers both sets);
- `gen_sft` (Generator): Alpaca {"instruction": query, "input": "", "output": extended};
- `ext_sft` (Extender): Alpaca {"instruction": the extend prompt filled with the query and the
  initial answer with each line kept with p = `line_keep` (0.8, seeded; lines re-joined with
  a blank line in Chinese, a newline in English, as the Qwen and LLaMA versions do),
  "input": "", "output": extended}; the prompt is the one the Extender saw (paper: the
  reference's prompt file, controlled: Longform's template);
- `sharegpt`: the `long` pairs as {"conversations": [human, gpt]}.

A second macro-iteration is another build with the adapters trained on the first one's
`gen_sft` and `ext_sft` named as `generator_model` and `extender_model` (on vLLM, LoRA
modules served beside the base model: `--enable-lora --lora-modules gen_sft=... ext_sft=...`);
they are passed to the Generator calls and to every `lengthen` child. Training itself is not
part of Longform.

Every draw is seeded by the build's `seed` and the draw's own key (never by position in a
list that can change), so a rerun or a resumed job draws the same. Lengths for sampling are
in characters (as the reference); words are Self-Lengthen's count
(`agents.text.count_words_selflengthen`) throughout.

`export(params, steps, children, fmt)` builds the records and stats from the parent's stored
step outputs and its children: the job's own export at the end and the API's at any time
(while running the extended sampling is provisional and pairs whose length demand is not
written yet are left out).
"""
from __future__ import annotations

import asyncio
import math
import random
import re
import zlib
from statistics import fmean
from typing import Any, Callable, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agents import dataset as ds
from agents import length_control as lc
from agents import selflengthen as sl
from agents.context import ChildJob, JobContext
from agents.length_target import find_numbers
from agents.llm.types import GenOptions, LLMBadRequest
from agents.text import count_words_selflengthen, detect_language

RECIPE = "selflengthen"
FORMATS = ("long", "gen_sft", "ext_sft", "sharegpt")
SUITED_WORDS = 2000  # the judge: suited to an article of more than this many words
INSTRUCTION_WORDS = (3, 500)  # accepted when 3 < words < 500 (exclusive)
INSTRUCTION_MAX_TOKENS = 1024  # a candidate instruction (an accepted one has < 500 words)
JUDGE_MAX_TOKENS = 32
DEMAND_MAX_TOKENS = 2048
# The reference's constraint types and their shares (add_length_control.py).
DEMAND_TYPES: tuple[tuple[str, float], ...] = (("about", 0.40), ("range", 0.25), ("above", 0.10), ("below", 0.25))
GATE_FAILED = "the final gate failed"  # how a `lengthen` child under paper says its gate failed
# Params of the children the recipe sets itself; `lengthen` may not.
RESERVED_LENGTHEN = ("instruction", "text", "protocol", "generator_model", "extender_model", "seed", "target_words")

TEMPLATES = {
    "instruct": {"en": "selflengthen/self_instruct.j2", "zh": "selflengthen/self_instruct_zh.j2"},
    "judge": {"en": "selflengthen/judge.j2", "zh": "selflengthen/judge_zh.j2"},
    "demand": {"en": "selflengthen/length_demand.j2", "zh": "selflengthen/length_demand_zh.j2"},
}
JUDGE_SCHEMA: dict[str, Any] = {
    "type": "object", "properties": {"answer": {"type": "string", "enum": ["yes", "no"]}}, "required": ["answer"],
}
DEMAND_SCHEMA: dict[str, Any] = {
    "type": "object", "properties": {"query": {"type": "string", "minLength": 1}}, "required": ["query"],
}
INSTRUCTION_STOPS = ["\nInstruction 4", "\n指令4"]


# -- options --------------------------------------------------------------------------------------


class DemandWindow(BaseModel):
    """Responses of min <= words < max get a length demand (the reference: 2000-8000)."""

    model_config = ConfigDict(extra="forbid")
    min: int = Field(2000, ge=1)
    max: int = Field(8000, ge=2)

    @model_validator(mode="after")
    def _ordered(self) -> "DemandWindow":
        if self.min >= self.max:
            raise ValueError(f"min ({self.min}) must be below max ({self.max})")
        return self


class SelfLengthenOptions(BaseModel):
    """The `selflengthen` recipe's knobs (the dataset param `selflengthen`); defaults are the reference's."""

    model_config = ConfigDict(extra="forbid")

    initial_answers: int = Field(2, ge=1, le=8, description="Generator answers per instruction")
    extensions: int = Field(2, ge=1, le=8, description="lengthen children per kept initial answer")
    instruct_attempts: int = Field(10, ge=1, le=50,
                                   description="self-instruct: at most this many candidates per instruction asked for")
    instruct_window: int = Field(128, ge=1, le=4096,
                                 description="self-instruct: candidates in flight at once; candidate c draws its examples "
                                             "from the seeds and the instructions accepted among candidates before c - window")
    drop_short: bool = Field(True, description="length-biased sampling of both sets: keep with p = max(0, 1 - 2 r^3)")
    line_keep: float = Field(0.8, gt=0.0, le=1.0, description="ext_sft: each line of the initial answer kept with this p")
    length_demand_words: DemandWindow = Field(default_factory=DemandWindow,
                                              description="responses in [min, max) words get a length demand")
    demand_attempts: int = Field(2, ge=1, le=5, description="rewrites asked for before the constraint is appended")
    language: Literal["auto", "en", "zh"] = Field("auto", description="of self-instruct prompts and answers")


def lengthen_base(params: Any) -> dict[str, Any]:
    """The params every `lengthen` child (and the Generator calls) share."""
    return {**params.lengthen, "protocol": params.protocol or "paper",
            "generator_model": params.generator_model, "extender_model": params.extender_model}


def check_lengthen_params(lengthen: dict[str, Any], context: dict[str, Any] | None) -> None:
    """`lengthen` holds params of the children's `lengthen` kind, except those the recipe sets."""
    reserved = [k for k in RESERVED_LENGTHEN if k in lengthen]
    if reserved:
        raise ValueError(f"lengthen.{reserved[0]} is set by the selflengthen recipe (use the dataset's "
                         f"{'protocol, generator_model, extender_model or seed' if reserved[0] not in ('instruction', 'text', 'target_words') else 'instructions'})")
    sl.LengthenParams.model_validate({"instruction": "probe", **lengthen}, context=context)


# -- pure parts: sampling, line dropping, length demands -------------------------------------------------


def rng_for(seed: int, *key: Any) -> random.Random:
    """A generator fixed by the build's seed and a draw's key (the same in every process)."""
    return random.Random("/".join(str(part) for part in (seed, *key)))


def keep_probability(index: int, total: int) -> float:
    """drop_short: the sample at ascending `index` of `total` is kept with max(0, 1 - 2 r^3), r = 1 - index/total."""
    r = 1.0 - index / total
    return max(0.0, 1.0 - 2.0 * r ** 3)


def drop_short(lengths: list[int], draws: list[float]) -> list[bool]:
    """Which samples length-biased sampling keeps (in input order): sorted by length (ties by
    position), the sample at index i of N (r = 1 - i/N) is kept when its uniform draw exceeds
    2 r^3. The shortest ~21% (r > 2^(-1/3)) are always dropped; about 59.5% are kept on
    average. (The reference draws in sorted order; a draw per sample, as here, gives the same
    distribution and lets a sample's fate be known early: `drop_short_fates`.)"""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    keep = [False] * len(lengths)
    for rank, index in enumerate(order):
        r = 1.0 - rank / len(lengths)
        keep[index] = draws[index] > 2.0 * r ** 3
    return keep


def key_order(key: str) -> tuple[int, ...]:
    """"12/1" -> (12, 1): sample keys sort by item, then answer (then extension)."""
    return tuple(int(part) for part in key.split("/"))


def sample_draw(seed: int, sample_set: str, key: str) -> float:
    """The uniform draw of one sample in drop_short, fixed by the seed, the set and its key."""
    return rng_for(seed, "drop_short", sample_set, key).random()


def drop_short_fates(lengths: dict[str, int], draws: dict[str, float], pending: int = 0) -> dict[str, bool | None]:
    """drop_short over samples by key while `pending` more may still come (each may fail, or
    pass at any length): True kept whatever they turn out to be, False dropped whatever, None
    not known yet. With pending=0 every fate is known and agrees with `drop_short`.

    A sample at index i of N is kept iff i/N > 1 - (u/2)^(1/3) (u its draw); the pending ones
    can move its index to at most i + pending and N to at most N + pending, so i/N stays within
    [i/(N + pending), (i + pending)/(N + pending)]."""
    order = sorted(lengths, key=lambda k: (lengths[k], key_order(k)))
    total = len(order) + pending
    fates: dict[str, bool | None] = {}
    for i, key in enumerate(order):
        threshold = 1.0 - (draws[key] / 2.0) ** (1.0 / 3.0)
        if pending == 0:
            fates[key] = draws[key] > 2.0 * (1.0 - i / total) ** 3
        else:
            fates[key] = True if i / total > threshold else False if (i + pending) / total <= threshold else None
    return fates


def degrade_lines(text: str, language: str, rng: random.Random, keep: float = 0.8) -> str:
    """The Extender's training input: `text` split on newlines, each line kept with p =
    `keep`, re-joined with a blank line (Chinese, the Qwen version) or a newline (English,
    the LLaMA version)."""
    lines = [line for line in text.split("\n") if rng.random() < keep]
    return ("\n\n" if language == "zh" else "\n").join(lines)


_ZH_DIGITS = "零一二三四五六七八九"


def chinese_numeral(n: int) -> str:
    """An integer in Chinese numerals, as cn2an's an2cn writes it: 2000 -> 二千, 2500 -> 二千五百,
    3050 -> 三千零五十, 12000 -> 一万二千."""
    if n <= 0 or n >= 10 ** 8:
        raise ValueError(f"chinese_numeral takes 1 to 99,999,999, got {n}")

    def below_10000(value: int, leading: bool) -> str:
        out, zero = "", False
        for unit_value, unit in ((1000, "千"), (100, "百"), (10, "十"), (1, "")):
            digit = value // unit_value % 10
            if digit:
                if zero and out:
                    out += "零"
                out += ("" if (unit == "十" and digit == 1 and leading and not out) else _ZH_DIGITS[digit]) + unit
                zero = False
            elif out:
                zero = True
        return out

    high, low = divmod(n, 10_000)
    if not high:
        return below_10000(low, True)
    out = below_10000(high, True) + "万"
    if low:
        out += ("零" if low < 1000 else "") + below_10000(low, False)
    return out


def _round_half_up(value: float) -> int:
    return int(math.floor(value + 0.5))


def length_demand(words: int, language: str, rng: random.Random, window: tuple[int, int] = (2000, 8000)) -> dict[str, Any] | None:
    """A length demand for a response of `words` words, or None outside [window).

    As the reference: a uniform r picks the type (about < 0.40 <= range < 0.65 <= above <
    0.75 <= below); the unit is 2000 with p = 0.2, else 1000 (100 under 1000 words, 10 under
    100); rounded, rounded-down (`low`) and rounded-up (`high`) lengths are clamped to the
    window; in Chinese the numbers are Chinese numerals with p = 0.5. "above" states `low`,
    "below" `high` (the reference's Chinese list has the two the other way round, so its
    constraints contradicted the response). A range whose ends coincide (a length on the
    unit) is widened by one unit within the window.
    Returns {"type", "constraint", "numbers", "words", "unit", "numerals"}."""
    low_w, high_w = window
    if not low_w <= words < high_w:
        return None
    r = rng.random()
    if words < 100:
        unit = 10
    elif words < 1000:
        unit = 100
    else:
        unit = 2000 if rng.random() < 0.2 else 1000
    numerals = language == "zh" and rng.random() < 0.5
    rounded = min(max(_round_half_up(words / unit) * unit, low_w), high_w)
    low = max(words // unit * unit, low_w)
    high = min(-(-words // unit) * unit, high_w)
    bound, kind = 0.0, DEMAND_TYPES[-1][0]
    for name, share in DEMAND_TYPES:  # about < 0.40 <= range < 0.65 <= above < 0.75 <= below
        bound += share
        if r < bound:
            kind = name
            break
    if kind == "range" and low == high:
        if high + unit <= high_w:
            high += unit
        else:
            low = max(low - unit, low_w)
    numbers = {"about": [rounded], "range": [low, high], "above": [low], "below": [high]}[kind]
    return {"type": kind, "constraint": constraint_text(kind, numbers, language, numerals), "numbers": numbers,
            "words": words, "unit": unit, "numerals": numerals}


def constraint_text(kind: str, numbers: list[int], language: str, numerals: bool = False) -> str:
    """"about 3000 words", "2000-3000 words", "more than 2000 words", "less than 4000 words";
    Chinese: "大约3000字", "2000字至3000字", "大于2000字", "小于4000字" (LonGen's wording)."""
    if language == "zh":
        say = [chinese_numeral(n) if numerals else str(n) for n in numbers]
        return {"about": "大约{0}字", "range": "{0}字至{1}字", "above": "大于{0}字", "below": "小于{0}字"}[kind].format(*say)
    return {"about": "about {0} words", "range": "{0}-{1} words", "above": "more than {0} words",
            "below": "less than {0} words"}[kind].format(*numbers)


def states_constraint(query: str, numbers: list[int]) -> bool:
    """The rewritten query states every number of the constraint."""
    found = set(find_numbers(query))
    return all(n in found for n in numbers)


def appended_constraint(query: str, constraint: str, language: str) -> str:
    """The fallback when the model's rewrite does not state the constraint."""
    if language == "zh":
        return f"{query.rstrip()}\n\n要求：{constraint}。"
    return f"{query.rstrip()}\n\nThe response should be {constraint}."


def instruction_rejection(text: str, pool: set[str]) -> str | None:
    """Why a candidate instruction is refused before the judge, or None: "empty", "too_short"
    (at most 3 words), "too_long" (500 words or more), "duplicate" (of the pool)."""
    if not text.strip():
        return "empty"
    words = count_words_selflengthen(text)
    if words <= INSTRUCTION_WORDS[0]:
        return "too_short"
    if words >= INSTRUCTION_WORDS[1]:
        return "too_long"
    if ds.normalize_text(text) in pool:
        return "duplicate"
    return None


def accepts(text: str, judged_yes: bool, pool: set[str] | None = None) -> bool:
    """Self-instruct's rule: the judge says yes and 3 < words < 500 (and not a duplicate)."""
    return judged_yes and instruction_rejection(text, pool or set()) is None


def clean_instruction(text: str) -> str:
    """The third instruction as written: cut at a fourth one, without a repeated label."""
    for stop in INSTRUCTION_STOPS + ["\n\nInstruction", "\n\n指令"]:
        at = text.find(stop)
        if at >= 0:
            text = text[:at]
    return re.sub(r"^\s*(?:Instruction\s*3\s*[:：]|指令\s*3\s*[:：])\s*", "", text.strip()).strip()


# -- the run --------------------------------------------------------------------------------------------


def _sampling(lp: sl.LengthenParams, key: str, max_tokens: int, seed: int, stop: list[str] | None = None,
              extra_body: dict[str, Any] | None = None, priority: int | None = None) -> GenOptions:
    """The reference's sampling (the build's lengthen params) on the base model."""
    return GenOptions(max_tokens=max_tokens, temperature=lp.temperature, top_p=lp.top_p, top_k=lp.top_k,
                      repetition_penalty=lp.repetition_penalty, stop=stop, seed=lc.seed_for(seed, key),
                      extra_body=extra_body, priority=priority)


def expected_accepted(accepted: int, decided: int, in_flight: int) -> float:
    """Self-instruct launches another candidate while this is below the count asked for: the
    accepted so far plus what the candidates in flight will likely bring at the acceptance rate
    seen so far (1 before any is decided), less two standard deviations, so that the last
    instructions seldom wait for a candidate launched late."""
    rate = max(accepted / decided, 0.1) if decided else 1.0
    return accepted + rate * in_flight - 2 * math.sqrt(in_flight * rate * (1 - rate))


class SelfInstruct:
    """Instructions from seed prompts (see the module doc, step 1)."""

    def __init__(self, ctx: JobContext, seeds: list[str], count: int, attempts: int, lp: sl.LengthenParams,
                 seed: int, language: str, on_accepted: Callable[[int, str], None], window: int = 128):
        self.ctx, self.count, self.lp, self.seed, self.language = ctx, count, lp, seed, language
        self.seeds = [s.strip() for s in seeds if s and s.strip()]
        self.budget = attempts * count
        self.on_accepted = on_accepted
        self.paper = lp.protocol == "paper"
        # Self-instruct calls are the build's critical path: served before its answers (which
        # only fill the server meanwhile) where the server schedules by priority.
        self.priority = ctx.request_priority(urgency=99)
        self.done = False
        self.leftover: list[asyncio.Future] = []  # candidates still writing when `count` was reached
        self.window = window
        self.stats: dict[str, Any] = {"seeds": len(self.seeds), "window": window, "candidates": 0, "accepted": 0,
                                      "judge_calls": 0, "surplus": 0, "unused": 0, "continued_with": {},
                                      "rejected": {"empty": 0, "too_short": 0, "too_long": 0, "duplicate": 0,
                                                   "judge_no": 0}}

    def _stops(self) -> list[str]:
        return list(dict.fromkeys(lc.PAPER_COMPLETION_STOP + INSTRUCTION_STOPS)) if self.paper else list(INSTRUCTION_STOPS)

    async def _write(self, c: int, examples: list[str]) -> dict[str, Any]:
        ctx = self.ctx
        language = self.language if self.language != "auto" else detect_language(" ".join(examples))
        label = "指令{n}：{text}\n" if language == "zh" else "Instruction {n}: {text}\n"

        async def call() -> dict[str, Any]:
            template = TEMPLATES["instruct"][language]
            key = f"instruct/{c}"
            prefill = "".join(label.format(n=n, text=e) for n, e in enumerate(examples, 1))
            prefill += f"指令{len(examples) + 1}：" if language == "zh" else f"Instruction {len(examples) + 1}:"
            messages = [{"role": "user", "content": ctx.render(template, examples=[])},
                        {"role": "assistant", "content": prefill}]
            try:
                result = await ctx.llm.chat(messages, _sampling(self.lp, key, INSTRUCTION_MAX_TOKENS, self.seed,
                                                                self._stops(), dict(lc.PREFILL_FLAGS), self.priority))
                return {"text": clean_instruction(result.text), "examples": examples, "continued_with": "prefill",
                        "finish_reason": result.finish_reason}
            except LLMBadRequest as err:
                asked = [{"role": "user", "content": ctx.render(template, examples=examples)}]
                result = await ctx.llm.chat(asked, _sampling(self.lp, key, INSTRUCTION_MAX_TOKENS, self.seed,
                                                             self._stops(), priority=self.priority))
                return {"text": clean_instruction(result.text), "examples": examples, "continued_with": "chat",
                        "fallback_reason": f"the server refused continue_final_message: {err}",
                        "finish_reason": result.finish_reason}

        return await ctx.step(f"instruct/{c}", call)

    async def _judge(self, c: int, instruction: str) -> bool:
        ctx = self.ctx
        language = detect_language(instruction)

        async def call() -> dict[str, Any]:
            from agents.llm.structured import chat_json

            prompt = ctx.render(TEMPLATES["judge"][language], instruction=instruction, words=SUITED_WORDS)
            value, _ = await chat_json(ctx.llm, [{"role": "user", "content": prompt}], JUDGE_SCHEMA,
                                       _sampling(self.lp, f"judge/{c}", JUDGE_MAX_TOKENS, self.seed,
                                                 priority=self.priority))
            return {"answer": value["answer"]}

        return (await ctx.step(f"judge/{c}", call))["answer"] == "yes"

    async def _candidate(self, c: int, pool: list[str], known: set[str]) -> tuple[str, str | None]:
        """(instruction, why refused or None)."""
        rng = rng_for(self.seed, "instruct", c)
        examples = rng.sample(pool, 2) if len(pool) >= 2 else list(pool)
        written = await self._write(c, examples)
        text = written["text"]
        how = written.get("continued_with", "prefill")
        self.stats["continued_with"][how] = self.stats["continued_with"].get(how, 0) + 1
        refused = instruction_rejection(text, known)
        if refused:
            return text, refused
        if self.done:
            return text, "unused"  # the build has its instructions: no judge
        self.stats["judge_calls"] += 1
        return text, None if await self._judge(c, text) else "judge_no"

    async def run(self) -> list[dict[str, Any]]:
        """The first `count` accepted candidates, in candidate order (each also handed to
        `on_accepted` as soon as it is final). Candidate c draws its examples from the seeds
        and the instructions accepted among candidates 0 .. c - window - 1, so at most
        `window` candidates are in flight and every draw is fixed by stored outputs alone."""
        if not self.seeds:
            raise ValueError("give at least one non-empty seed prompt")
        accepted: list[dict[str, Any]] = []
        known = {ds.normalize_text(s) for s in self.seeds}
        decided: dict[int, tuple[str, str | None]] = {}
        tasks: dict[asyncio.Future, int] = {}
        prefix = launched = 0  # candidates below `prefix` are final

        async def candidate(c: int) -> None:
            pool = self.seeds + [a["instruction"] for a in accepted if a["candidate"] < c - self.window]
            decided[c] = await self._candidate(c, pool, {ds.normalize_text(p) for p in pool})

        failed = True
        try:
            while len(accepted) < self.count:
                while prefix in decided and len(accepted) < self.count:  # finalize in candidate order
                    text, refused = decided.pop(prefix)
                    if refused is None and ds.normalize_text(text) in known:
                        refused = "duplicate"  # of one accepted after this candidate drew its examples
                    if refused is not None:
                        self.stats["rejected"][refused] += 1
                    else:
                        accepted.append({"instruction": text, "target_words": None, "candidate": prefix})
                        known.add(ds.normalize_text(text))
                        self.on_accepted(len(accepted) - 1, text)
                    prefix += 1
                if len(accepted) >= self.count:
                    break
                if launched < self.budget and launched - prefix < self.window and \
                        expected_accepted(len(accepted), prefix, launched - prefix) < self.count:
                    tasks[asyncio.ensure_future(candidate(launched))] = launched
                    launched += 1
                    continue
                if launched == prefix:
                    break  # the budget is spent
                done, _ = await asyncio.wait(list(tasks), return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    del tasks[task]
                    task.result()  # an error of the model server ends the build
                await self.ctx.progress(len(accepted), self.count, stage="self_instruct", candidates=prefix)
            failed = False
        finally:
            self.done = True
            # Candidates still in flight finish their current call (not cancelled half-way
            # through a step) and are not judged; the caller awaits them (`leftover`).
            self.leftover = [task for task in tasks if not task.done()]
            if failed:
                for task in self.leftover:
                    task.cancel()
        self.stats.update(candidates=prefix, accepted=len(accepted), surplus=len(decided),
                          unused=launched - prefix - len(decided))
        if len(accepted) < self.count:
            await self.ctx.log(f"self-instruct: {len(accepted)} of {self.count} instructions accepted after "
                               f"{prefix} candidates (the limit: {self.budget})")
        return accepted


def child_seed(seed: int, key: str, extension: int) -> int:
    return zlib.crc32(f"{seed}/extend/{key}/{extension}".encode()) % (2 ** 31)


def children_params(answers: list[dict[str, Any]], base: dict[str, Any], extensions: int, seed: int) -> list[dict[str, Any]]:
    """Every answer `extensions` times, in order (child n extends answers[n // extensions])."""
    return [{**base, "instruction": a["instruction"], "text": a["text"], "target_words": a.get("target_words"),
             "seed": child_seed(seed, a["key"], j)}
            for a in answers for j in range(extensions)]


class InitialPhase:
    """The Generator's initial answers, their length-biased sampling, and the extension
    children of the kept ones (module doc, 2-4).

    An answer's children are spawned as soon as drop_short keeps it whatever the answers still
    to come turn out to be (`drop_short_fates`), in batches (steps `spawn/{t}`), so extension
    starts while the last answers are written; the rest when every answer is in. The kept set
    is exactly drop_short's over all the answers. A resumed job adopts its stored batches."""

    def __init__(self, ctx: JobContext, params: Any, base: dict[str, Any], expected: int):
        self.ctx, self.params, self.base = ctx, params, base
        self.opts: SelfLengthenOptions = params.selflengthen
        self.answers: dict[str, dict[str, Any]] = {}  # by key "item/answer"
        self.expected = expected  # at most this many answers in all (some may never come)
        self.batches: list[dict[str, Any]] = []  # {"answers": [keys], "ids": [child ids]}, in spawn order
        self.spawned: set[str] = set()
        self.batch_size = max(4, expected // 16)
        self._lock = asyncio.Lock()

    async def answer(self, i: int, k: int, lp: sl.LengthenParams, target_words: int | None) -> None:
        ctx = self.ctx
        language = sl.resolve_language(lp.instruction, lp.language)
        count = sl.COUNTERS["selflengthen" if lp.protocol == "paper" else "words"]
        key = f"{i}/{k}"
        try:
            got = await sl.initial_answer(ctx, lp, language, count, key_prefix=f"answer/{key}/")
            text, attempts = got["text"], got["attempts"]
        except sl.InitialAnswerFailed as failed:
            text, attempts = None, failed.attempts
        self.answers[key] = {"key": key, "item": i, "answer": k, "instruction": lp.instruction,
                             "target_words": target_words, "language": language, "text": text, "attempts": attempts}
        await self.spawn_certain()

    def fates(self, pending: int) -> dict[str, bool | None]:
        lengths = {key: len(a["text"]) for key, a in self.answers.items() if a["text"] is not None}
        if not self.opts.drop_short:
            return {key: True for key in lengths}
        draws = {key: sample_draw(self.params.seed, "initial", key) for key in lengths}
        return drop_short_fates(lengths, draws, pending)

    async def spawn_certain(self) -> None:
        """Spawn the children of the answers now certain to be kept, when there are enough."""
        async with self._lock:
            fates = self.fates(max(0, self.expected - len(self.answers)))
            new = sorted((key for key, fate in fates.items() if fate and key not in self.spawned), key=key_order)
            if len(new) >= self.batch_size:
                await self._spawn(new)

    async def _spawn(self, keys: list[str]) -> None:
        t = len(self.batches)
        before = sum(len(b["ids"]) for b in self.batches)

        async def spawn() -> dict[str, Any]:
            children = children_params([self.answers[key] for key in keys], self.base, self.opts.extensions,
                                       self.params.seed)
            ids = await self.ctx.spawn_children("lengthen", children, self.params.child_priority, start=before)
            return {"answers": keys, "ids": ids}

        batch = await self.ctx.step(f"spawn/{t}", spawn)  # a resumed job gets its stored batch back
        self.batches.append(batch)
        self.spawned.update(batch["answers"])

    def sample(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        """The `sample/initial` step: drop_short over every answer that passed the filters; the
        kept ones (in item order, with their texts) and the initial stats."""
        rows = sorted(self.answers.values(), key=lambda a: key_order(a["key"]))
        fates = self.fates(0)
        rejected: dict[str, int] = {}
        for a in rows:
            for attempt in a["attempts"]:
                if attempt["reason"]:
                    rejected[attempt["reason"]] = rejected.get(attempt["reason"], 0) + 1
        kept = [{k: a[k] for k in ("key", "item", "answer", "instruction", "target_words", "language", "text")}
                for a in rows if fates.get(a["key"])]
        good = sum(1 for a in rows if a["text"] is not None)
        return {
            "kept": kept,
            "stats": {
                "requested": len(rows), "answered": good, "failed": len(rows) - good,
                "generator_calls": sum(len(a["attempts"]) for a in rows),
                "regenerations": sum(len(a["attempts"]) - 1 for a in rows),
                "rejected_by_filter": dict(sorted(rejected.items())),
            },
            "sampling": {"candidates": good, "kept": len(kept), "dropped": good - len(kept)},
        }

    async def spawn_rest(self, sampled: dict[str, Any]) -> None:
        kept = {a["key"]: a for a in sampled["kept"]}
        if not self.spawned <= set(kept):  # cannot happen: an early fate is final
            raise RuntimeError(f"answers spawned early but not kept: {sorted(self.spawned - set(kept))}")
        self.answers.update({key: {**self.answers.get(key, {}), **a} for key, a in kept.items()})
        while rest := sorted((key for key in kept if key not in self.spawned), key=key_order):
            await self._spawn(rest)  # a resumed job may first get back batches it stored


async def run(ctx: JobContext, params: Any) -> dict[str, Any]:
    """The recipe (module doc). Returns the DatasetResult fields."""
    opts: SelfLengthenOptions = params.selflengthen
    base = lengthen_base(params)
    probe = sl.LengthenParams.model_validate({"instruction": "probe", **base, "seed": params.seed})
    await sl.check_models(ctx, probe)
    phase = InitialPhase(ctx, params, base, opts.initial_answers * (params.count if params.seeds else 0))
    tasks: list[asyncio.Future] = []

    def start(i: int, instruction: str, target_words: int | None = None) -> None:
        lp = sl.LengthenParams.model_validate({"language": opts.language, **base, "instruction": instruction,
                                               "seed": params.seed, "target_words": target_words})
        tasks.extend(asyncio.ensure_future(phase.answer(i, k, lp, target_words)) for k in range(opts.initial_answers))

    try:
        if params.seeds:
            instruct = SelfInstruct(ctx, params.seeds, params.count, opts.instruct_attempts, probe, params.seed,
                                    opts.language, lambda i, text: start(i, text), opts.instruct_window)
            accepted = await instruct.run()
            tasks.extend(instruct.leftover)

            async def record() -> dict[str, Any]:
                return {"items": accepted, "rejected_lines": [], "self_instruct": instruct.stats}

            resolved = await ctx.step("items", record)
        else:
            async def resolve() -> dict[str, Any]:
                if params.items is not None:
                    return {"items": [i.model_dump() for i in params.items], "rejected_lines": []}
                text = params.jsonl if params.jsonl is not None else await ctx.load_document(params.document_id)
                items, errors = ds.parse_instruction_jsonl(text)
                return {"items": items, "rejected_lines": errors}

            resolved = await ctx.step("items", resolve)
            phase.expected = opts.initial_answers * len(resolved["items"])
            phase.batch_size = max(4, phase.expected // 16)
            for i, item in enumerate(resolved["items"]):
                start(i, item["instruction"], item.get("target_words"))
        items = resolved["items"]
        if not items:
            if resolved.get("self_instruct"):
                si = resolved["self_instruct"]
                refused = ", ".join(f"{k} {v}" for k, v in si["rejected"].items() if v)
                raise ValueError(f"self-instruct accepted no instruction of {si['candidates']} candidates ({refused})")
            raise ValueError("no usable instructions" + (f" ({len(resolved['rejected_lines'])} lines rejected)"
                                                          if resolved["rejected_lines"] else ""))
        phase.expected = opts.initial_answers * len(items)  # what self-instruct brought
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()

    async def sample() -> dict[str, Any]:
        return phase.sample(items)

    sampled = await ctx.step("sample/initial", sample)
    await phase.spawn_rest(sampled)
    steps: dict[str, Any] = {"items": resolved, "sample/initial": sampled}
    steps.update({f"spawn/{t}": batch for t, batch in enumerate(phase.batches)})
    child_keys = extension_keys(phase.batches, opts.extensions)
    # The kept initial answers' length demands are written while the children extend them.
    initial_pairs, _ = long_pairs(sampled, None, [], {})
    early = asyncio.ensure_future(write_demands(ctx, params, initial_pairs, probe)) if params.length_demands else None
    try:
        if child_keys:
            await ctx.wait_children()
        children = await ctx.children()
        by_id = {c.id: c for c in children}

        async def sample_ext() -> dict[str, Any]:
            return sample_extended(child_keys, by_id, params.seed, opts.drop_short)

        extended = await ctx.step("sample/extended", sample_ext)
        steps["sample/extended"] = extended
        if early is not None:
            _, ext_pairs = long_pairs(sampled, extended, child_keys, by_id)
            steps.update(await write_demands(ctx, params, ext_pairs, probe))
            steps.update(await early)
    finally:
        if early is not None:
            early.cancel()
    out_dir = ctx.data_dir / "datasets" / ctx.job_id
    records, stats = export(params.model_dump(mode="json"), steps, children, overlay=ctx.prompt_overlay)
    files = await asyncio.to_thread(ds.write_files, out_dir, {f: records[f] for f in params.formats}, stats)
    return {"files": files, "stats": stats, "kept": stats["kept"], "items": stats["items"],
            "rejected_lines": resolved["rejected_lines"], "recipe": RECIPE}


def extension_keys(batches: list[dict[str, Any]], extensions: int) -> list[tuple[str, str]]:
    """(child id, extension key "item/answer/j") of every child, in spawn order."""
    return [(cid, f"{batch['answers'][n // extensions]}/{n % extensions}")
            for batch in batches for n, cid in enumerate(batch["ids"])]


def stored_batches(steps: dict[str, Any]) -> list[dict[str, Any]]:
    batches, t = [], 0
    while f"spawn/{t}" in steps:
        batches.append(steps[f"spawn/{t}"])
        t += 1
    return batches


def _extension_of(child: ChildJob | None) -> tuple[str, dict[str, Any] | None]:
    """(outcome, result): "candidate" (succeeded and passed the gate), "failed_gate", "failed",
    or "unfinished"."""
    if child is None or child.status in ("queued", "running"):
        return "unfinished", None
    if child.status == "succeeded" and isinstance(child.result, dict) and child.result.get("text"):
        gate = child.result.get("gate") or {}
        return ("candidate" if gate.get("passed") else "failed_gate"), child.result
    if child.status == "failed" and GATE_FAILED in (child.error or ""):
        return "failed_gate", None
    return "failed", None


def sample_extended(child_keys: list[tuple[str, str]], by_id: dict[str, ChildJob], seed: int,
                    use_drop_short: bool) -> dict[str, Any]:
    """drop_short over the extensions that passed the gate: {"kept": [child ids], "outcomes", "sampling"}."""
    outcomes: dict[str, int] = {"candidate": 0, "failed_gate": 0, "failed": 0, "unfinished": 0}
    lengths: dict[str, int] = {}
    ids: dict[str, str] = {}
    for cid, key in child_keys:
        outcome, result = _extension_of(by_id.get(cid))
        outcomes[outcome] += 1
        if outcome == "candidate":
            lengths[key], ids[key] = len(result["text"]), cid
    if use_drop_short:
        fates = drop_short_fates(lengths, {key: sample_draw(seed, "extended", key) for key in lengths})
    else:
        fates = {key: True for key in lengths}
    kept = [ids[key] for key in sorted(lengths, key=key_order) if fates[key]]
    return {"kept": kept, "outcomes": outcomes,
            "sampling": {"candidates": len(lengths), "kept": len(kept), "dropped": len(lengths) - len(kept)}}


def long_pairs(sampled: dict[str, Any] | None, extended: dict[str, Any] | None, child_keys: list[tuple[str, str]],
               by_id: dict[str, ChildJob]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(kept initial answers, kept extensions), each {"key", "query", "response", "language", ...},
    in item order."""
    if not sampled:
        return [], []
    kept = {a["key"]: a for a in sampled["kept"]}
    initial = [{"key": a["key"], "query": a["instruction"], "response": a["text"], "language": a["language"]}
               for a in sampled["kept"]]
    if not extended:
        return initial, []
    keep = set(extended["kept"])
    out = []
    for cid, key in child_keys:
        answer, child = kept.get(key.rsplit("/", 1)[0]), by_id.get(cid)
        if cid not in keep or answer is None or child is None or not isinstance(child.result, dict):
            continue
        out.append({"key": key, "query": answer["instruction"], "response": child.result["text"],
                    "initial": answer["text"], "language": child.result.get("language") or answer["language"],
                    "child": cid})
    out.sort(key=lambda e: key_order(e["key"]))
    return initial, out


async def write_demands(ctx: JobContext, params: Any, pairs: list[dict[str, Any]], lp: sl.LengthenParams) -> dict[str, Any]:
    """One step `demand/{key}` per pair (of `long_pairs`) within the window (module doc, 6);
    returns their outputs by step key."""
    from agents.llm.structured import chat_json
    from agents.llm.types import StructuredOutputError

    opts: SelfLengthenOptions = params.selflengthen
    window = (opts.length_demand_words.min, opts.length_demand_words.max)
    written: dict[str, Any] = {}

    async def one(pair: dict[str, Any]) -> None:
        demand = length_demand(count_words_selflengthen(pair["response"]), pair["language"],
                               rng_for(params.seed, "demand", pair["key"]), window)
        if demand is None:
            return
        key = f"demand/{pair['key']}"

        async def call() -> dict[str, Any]:
            language = pair["language"]
            prompt = ctx.render(TEMPLATES["demand"][language], constraint=demand["constraint"], query=pair["query"])
            tried = []
            for attempt in range(1, opts.demand_attempts + 1):
                try:
                    value, _ = await chat_json(ctx.llm, [{"role": "user", "content": prompt}], DEMAND_SCHEMA,
                                               _sampling(lp, f"{key}/{attempt}", DEMAND_MAX_TOKENS, params.seed))
                except StructuredOutputError as err:
                    tried.append(f"no valid JSON: {err}")
                    continue
                query = value["query"].strip()
                if query and states_constraint(query, demand["numbers"]):
                    return {**demand, "query": query, "via": "model", "attempts": attempt}
                tried.append("the rewrite does not state the constraint's numbers")
            return {**demand, "query": appended_constraint(pair["query"], demand["constraint"], language),
                    "via": "appended", "attempts": opts.demand_attempts, "why": tried[-1] if tried else None}

        written[key] = await ctx.step(key, call)

    await asyncio.gather(*(one(p) for p in pairs))
    return written


# -- exports and stats -------------------------------------------------------------------------------------


def extend_prompt(query: str, text: str, language: str, protocol: str, overlay: Any = None) -> str:
    """The Extender's prompt as the `lengthen` kind renders it (`length_control.Extender.render`)."""
    import prompts

    template = lc.TEMPLATES["paper" if protocol == "paper" else "controlled"][language]
    if protocol == "paper":
        return prompts.render_text(template, lambda t: lc.fill_reference(t, query, text), overlay=overlay).text
    return prompts.render(template, overlay=overlay, instruction=query, text=text).text


def export(params: dict[str, Any], steps: dict[str, Any], children: list[ChildJob], fmt: str | None = None,
           overlay: Any = None) -> tuple[dict[str, list[dict[str, Any]]], dict[str, Any]]:
    """({format: records}, stats) from the build's params (as stored), its stored step outputs
    and its children. `fmt`: only that format's records (the stats count every format)."""
    opts = SelfLengthenOptions.model_validate(params.get("selflengthen") or {})
    seed = int(params.get("seed") or 0)
    protocol = params.get("protocol") or "paper"
    by_id = {c.id: c for c in children}
    child_keys = extension_keys(stored_batches(steps), opts.extensions)
    sampled = steps.get("sample/initial")
    extended = steps.get("sample/extended")
    final = extended is not None
    if extended is None and child_keys:  # still running: provisional, over what has finished
        extended = sample_extended(child_keys, by_id, seed, opts.drop_short)
    initial, ext = long_pairs(sampled, extended, child_keys, by_id)

    demands: dict[str, Any] = {}
    pending = 0
    pairs = initial + ext
    if params.get("length_demands"):
        window = (opts.length_demand_words.min, opts.length_demand_words.max)
        chosen = []
        for pair in pairs:
            demand = steps.get(f"demand/{pair['key']}")
            if demand is not None:
                demands[pair["key"]] = demand
                chosen.append({**pair, "query": demand["query"]})
            elif window[0] <= count_words_selflengthen(pair["response"]) < window[1]:
                pending += 1  # its demand is not written yet
        pairs = chosen

    def build(name: str) -> list[dict[str, Any]]:
        if name == "long":
            return [{"query": p["query"], "response": p["response"]} for p in pairs]
        if name == "sharegpt":
            return [{"conversations": [{"from": "human", "value": p["query"]}, {"from": "gpt", "value": p["response"]}]}
                    for p in pairs]
        if name == "gen_sft":
            return [{"instruction": e["query"], "input": "", "output": e["response"]} for e in ext]
        if name == "ext_sft":
            return [{"instruction": extend_prompt(e["query"], degrade_lines(e["initial"], e["language"], rng_for(
                        seed, "ext_sft", e["key"]), opts.line_keep), e["language"], protocol, overlay),
                     "input": "", "output": e["response"]} for e in ext]
        raise ValueError(f"unknown export format {name!r} for the selflengthen recipe; use one of {', '.join(FORMATS)}")

    records = {name: build(name) for name in ([fmt] if fmt is not None else FORMATS)}
    counts = {"long": len(pairs), "gen_sft": len(ext), "ext_sft": len(ext), "sharegpt": len(pairs)}
    stats = build_stats(params, steps, children, sampled, extended, final, initial, ext, demands, pending, counts)
    return records, stats


def _words(texts: list[str]) -> dict[str, Any]:
    words = [count_words_selflengthen(t) for t in texts]
    return {"total": sum(words), "min": min(words) if words else None, "max": max(words) if words else None,
            "mean": round(fmean(words), 1) if words else None}


def build_stats(params: dict[str, Any], steps: dict[str, Any], children: list[ChildJob], sampled: Any, extended: Any,
                final: bool, initial: list[dict[str, Any]], ext: list[dict[str, Any]], demands: dict[str, Any],
                pending: int, counts: dict[str, int]) -> dict[str, Any]:
    opts = SelfLengthenOptions.model_validate(params.get("selflengthen") or {})
    resolved = steps.get("items") or {}
    by_id = {c.id: c for c in children}
    batches = stored_batches(steps)
    child_ids = [cid for cid, _ in extension_keys(batches, opts.extensions)]
    rejected: dict[str, int] = {}
    iterations = accepted = unrecorded = 0
    for cid in child_ids:
        child = by_id.get(cid)
        outcome, result = _extension_of(child)
        if result is not None:
            for it in result.get("iterations") or []:
                iterations += 1
                if it.get("accepted"):
                    accepted += 1
                elif it.get("reason"):
                    rejected[it["reason"]] = rejected.get(it["reason"], 0) + 1
        elif outcome == "failed_gate" and child is not None:
            # A failed child has no result; its message says how many rounds it accepted.
            m = re.search(r"after (\d+) micro-iterations, (\d+) accepted", child.error or "")
            if m:
                iterations += int(m.group(1))
                accepted += int(m.group(2))
                unrecorded += int(m.group(1)) - int(m.group(2))
    demand_stats = None
    if params.get("length_demands"):
        types: dict[str, int] = {}
        for d in demands.values():
            types[d["type"]] = types.get(d["type"], 0) + 1
        demand_stats = {
            "window": [opts.length_demand_words.min, opts.length_demand_words.max],
            "pairs": len(initial) + len(ext), "demands": len(demands), "pending": pending,
            "out_of_window": len(initial) + len(ext) - len(demands) - pending,
            "types": dict(sorted(types.items())),
            "rewritten_by_model": sum(1 for d in demands.values() if d["via"] == "model"),
            "appended": sum(1 for d in demands.values() if d["via"] == "appended"),
            "chinese_numerals": sum(1 for d in demands.values() if d.get("numerals")),
        }
    outcomes = (extended or {}).get("outcomes") or {}
    return {
        "recipe": RECIPE,
        "protocol": {"name": params.get("protocol") or "paper", "differs_from_paper": differences(params, opts)},
        "items": len(resolved.get("items") or []),
        "kept": len(ext),
        "final": final,
        "self_instruct": resolved.get("self_instruct"),
        "initial": (sampled or {}).get("stats"),
        "extension": {
            "children": len(child_ids),
            "spawn_batches": len(batches),
            "passed_gate": outcomes.get("candidate", 0),
            "failed_gate": outcomes.get("failed_gate", 0),
            "failed": outcomes.get("failed", 0),
            "unfinished": outcomes.get("unfinished", 0),
            "micro_iterations": iterations,
            "accepted_candidates": accepted,
            "rejected_candidates": dict(sorted(rejected.items())),
            "rejected_candidates_reason_unrecorded": unrecorded,
        },
        "sampling": {"drop_short": opts.drop_short, "initial": (sampled or {}).get("sampling"),
                     "extended": (extended or {}).get("sampling")},
        "length_demands": demand_stats,
        "formats": counts,
        "words": {"initial": _words([p["response"] for p in initial]), "extended": _words([e["response"] for e in ext])},
    }


def differences(params: dict[str, Any], opts: SelfLengthenOptions) -> list[str]:
    """Each knob of the build that differs from the reference pipeline."""
    out = [
        "self-instruct: candidate c draws its examples from the seeds and the instructions accepted among candidates "
        f"before c - {opts.instruct_window} (paper: from the pool as it stands when a thread draws)",
        f"self-instruct: a candidate instruction at most {INSTRUCTION_MAX_TOKENS} tokens (paper: 16384)",
        "judge: structured output {\"answer\": \"yes\"|\"no\"} (paper: a free-text yes/no, 是/否 in Chinese)",
        "no 95% cutoff: every answer is waited for (paper: the slowest 5% of each stage are dropped)",
    ]
    if params.get("length_demands"):
        out.append("length demands: Chinese 'above' states the rounded-down length and 'below' the rounded-up one "
                   "(paper: 小于 with the minimum and 大于 with the maximum, constraints the response violates)")
    for knob, value, paper in (("initial_answers", opts.initial_answers, 2), ("extensions", opts.extensions, 2),
                               ("instruct_attempts", opts.instruct_attempts, 10), ("drop_short", opts.drop_short, True),
                               ("line_keep", opts.line_keep, 0.8)):
        if value != paper:
            out.append(f"{knob}: {value} (paper: {paper})")
    if (params.get("protocol") or "paper") != "paper":
        out.append("lengthen children: protocol controlled (see each child's protocol record)")
    return out
