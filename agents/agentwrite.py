"""AgentWrite (LongWriter): plan a long piece as sections with word budgets, then write the
sections one at a time, in order, each seeing the instruction, the plan and the text so far.

Job kind `write`: `WriteParams` in, `run(ctx, params)` -> result dict (see `run`).

Steps (each checkpointed, so a resumed job writes only what is missing; replay is exact
because every later prompt is built from stored step outputs only):
- `plan`          the model's JSON plan, repaired in code (`repair_plan`); skipped for short
                  targets (<= SHORT_TARGET_WORDS), which are one section.
- `section/{i}`   i = 1..n, strictly in order; continuation calls for a short or cut-off
                  section happen inside the same step.
- `single`        the baseline method: the whole piece in one call.
- `judge`         LongBench-Write quality verdict, when a judge model is configured.

What this adds over the reference code (see the spec's "bugs not to copy"): empty or failed
model output raises instead of being stored; the plan is validated (section count, budgets
that add up to the target, per-section range); sections far over budget are trimmed at a
paragraph boundary and short ones are continued; the text so far is compacted past the
context window instead of overflowing it; "Paragraph N" / "第N段" labels are stripped.
"""
from __future__ import annotations

import dataclasses
import math
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from agents import agentwrite_paper as paper
from agents.context import JobContext
from agents.kinds import Instruction, JobKind, ResultView, Score
from agents import length_control as lc
from agents.length_target import (
    LengthDemand,
    check_target,
    LengthDemandRecord,
    given_demand,
    parse_target_words,
    read_demand,
    read_length_demand,
    validate_target_words,
    with_stated_length,
)
# The cutting tools live in the length controller (the one copy); AgentWrite uses them from there.
from agents.length_control import cut_to_sentence_end, split_paragraphs, trim_to_budget  # noqa: F401
from agents.llm.tokens import count_message_tokens, output_room
from agents.llm.types import GenOptions, LLMBadRequest, LLMError, StructuredOutputError
from agents.metrics.longbench_write import (
    JUDGE_TEMPLATE,
    QUALITY_DIMENSIONS,
    judge_quality,
    length_score,
    overall_score,
)
from agents.protocol import PROTOCOL_FIELD_DESCRIPTION, Protocol, ProtocolRecord, protocol_record
from agents.text import count_words, detect_language

DEFAULT_TARGET_WORDS = 1000  # when neither the params nor the instruction give a length
SHORT_TARGET_WORDS = 600  # at or below: one section, no plan call
MAX_SECTIONS = 50  # the reference implementation skips plans longer than this
SECTION_MIN_WORDS, SECTION_MAX_WORDS = 200, 1000  # the paper's range for long pieces
SUGGESTED_SECTION_WORDS = 500
TEMPERATURE = 0.7  # the controlled protocol's default (the paper's AgentWrite runs at 1.0)
TOP_P = 1.0

# The section length decisions are the length controller's (agents.length_control): a section
# under 90% of its budget is continued, one over 150% trimmed at a paragraph boundary, and one
# cut off at max_tokens already over 110%.
CONTINUE_BELOW, TRIM_ABOVE, TRIM_CUT_ABOVE = lc.CONTINUE_BELOW, lc.TRIM_ABOVE, lc.TRIM_CUT_ABOVE
DEFAULT_MAX_TOKENS_PER_CALL = 4096  # the reference setting for plan and section calls
SINGLE_MAX_TOKENS = 32768  # the single baseline asks for as much as the context allows, up to this
# Output tokens per word/字, with headroom, to size max_tokens for a section (the controller's).
TOKENS_PER_UNIT, MAX_TOKENS_HEADROOM = lc.TOKENS_PER_UNIT, lc.MAX_TOKENS_HEADROOM
MIN_OUTPUT_TOKENS = 128
PRIOR_FRAME_TOKENS = 64  # the lines around the text so far that the base prompt lacks

LANGUAGE_NAMES = {"en": "English", "zh": "Chinese"}
UNIT_NAMES = {"en": "words", "zh": "Chinese characters (字)"}
UNIT_SHORT = {"en": "words", "zh": "字"}

# Chinese pieces get Chinese prompts: models follow the prompt's language more reliably.
TEMPLATES = {
    "en": {"plan": "agentwrite/plan.j2", "section": "agentwrite/section.j2", "single": "agentwrite/single.j2"},
    "zh": {"plan": "agentwrite/plan_zh.j2", "section": "agentwrite/section_zh.j2", "single": "agentwrite/single_zh.j2"},
}

def plan_schema(bounds: "PlanBounds") -> dict[str, Any]:
    """The plan's JSON schema. Loose where code repairs (too few sections, budgets), but
    bounded so a constrained decoder cannot run on (small models fill arrays up to
    maxItems): at most the allowed number of sections, short strings."""
    return {
        "type": "object",
        "properties": {
            "sections": {
                "type": "array",
                "minItems": 1,
                "maxItems": bounds.max_sections,
                "items": {
                    "type": "object",
                    "properties": {
                        "title": {"type": "string", "minLength": 1, "maxLength": 120},
                        "main_point": {"type": "string", "minLength": 1, "maxLength": 400},
                        "words": {"type": "integer", "minimum": 0},
                    },
                    "required": ["title", "main_point", "words"],
                },
            }
        },
        "required": ["sections"],
    }


class EmptyModelOutput(LLMError):
    """The model returned no text where text was required (never stored as a section)."""


class WriteParams(BaseModel):
    """Parameters of a `write` job.

    `target_words` is the length in LongWriter units (English words, or 字 for Chinese).
    When absent it is read from the instruction ("about 3000 words", "三千字"); when the
    instruction states none either, DEFAULT_TARGET_WORDS is used and the result says so
    (`target_source: "default"`). Validation context `{"max_target_words": N}` sets the
    upper bound (default length_target.DEFAULT_MAX_TARGET_WORDS; `run` re-checks against the settings).
    """

    model_config = ConfigDict(extra="forbid")

    instruction: Instruction
    target_words: int | None = None
    language: Literal["auto", "en", "zh"] = "auto"
    method: Literal["agentwrite", "single"] = "agentwrite"
    protocol: Protocol = Field("controlled", description=PROTOCOL_FIELD_DESCRIPTION)
    plan_model: str | None = None  # default: write_model, then the configured model
    write_model: str | None = None
    # Sampling defaults depend on the protocol: controlled 0.7; paper 1.0 (AgentWrite) or 0.5 (single).
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    max_tokens_per_call: int | None = Field(None, ge=MIN_OUTPUT_TOKENS)
    seed: int | None = None
    judge: bool = True  # score quality when a judge model is configured

    @field_validator("target_words")
    @classmethod
    def _target_in_range(cls, value: int | None, info: ValidationInfo) -> int | None:
        return validate_target_words(value, info.context)


def resolve_target(params: WriteParams, max_target: int) -> tuple[int, str]:
    """(target words, where it came from: "given" | "instruction" | "default")."""
    if params.target_words is not None:
        target, source = params.target_words, "given"
    else:
        parsed = parse_target_words(params.instruction)
        target, source = (parsed, "instruction") if parsed else (DEFAULT_TARGET_WORDS, "default")
    check_target(target, max_target)
    return target, source


async def resolve_demand(ctx: JobContext, params: WriteParams,
                         max_target: int) -> tuple[int, str, LengthDemand | None]:
    """(target words, where it came from, the demand reading). A given target_words is the
    target. Else the instruction's demand is read (`length_target.read_length_demand`): the
    controlled protocol writes to its aim, inside the interval meant ("less than 5,000 words"
    aims at 4,545, "5,000-6,000" at 5,500), asking the model (step `length_demand`) when the
    rules disagree; the paper protocol takes the stated number, by rules only."""
    if params.target_words is not None:
        demand: LengthDemand | None = given_demand(params.target_words)
    elif params.protocol == "paper":
        demand = read_demand(params.instruction)
    else:
        demand = await read_length_demand(ctx, params.instruction)
    if demand is None:
        target, source = DEFAULT_TARGET_WORDS, "default"
    elif demand.source == "given":
        target, source = demand.words, "given"
    else:
        target, source = (demand.words if params.protocol == "paper" else demand.aim), "instruction"
    check_target(target, max_target)
    return target, source, demand


_ASKS_ENGLISH = re.compile(r"英文|英语|in English", re.I)
_ASKS_CHINESE = re.compile(r"\b(?:in|into) (?:simplified |traditional )?Chinese\b|\bChinese (?:news|article|essay|report|story|text|version)\b|中文", re.I)


def resolve_language(instruction: str, requested: str = "auto") -> str:
    """The output language: as requested, else an explicit ask in the instruction ("用英文写",
    "write it in Chinese"), else the instruction's own script."""
    if requested != "auto":
        return requested
    own = detect_language(instruction)
    if own == "zh" and _ASKS_ENGLISH.search(instruction):
        return "en"
    if own == "en" and _ASKS_CHINESE.search(instruction):
        return "zh"
    return own


# -- plan ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PlanBounds:
    """How a target is cut into sections: count range and per-section budget range."""

    min_sections: int
    max_sections: int
    section_min: int
    section_max: int
    suggested_sections: int


def plan_bounds(target: int) -> PlanBounds:
    """The paper's 200-1000 words per section for long pieces, smaller for shorter ones,
    wider sections when 50 would not otherwise reach the target."""
    if target <= SHORT_TARGET_WORDS:
        return PlanBounds(1, 1, target, target, 1)
    section_min = min(SECTION_MIN_WORDS, max(100, target // 10))
    section_max = min(SECTION_MAX_WORDS, max(section_min, target // 2))
    section_max = max(section_max, math.ceil(target / MAX_SECTIONS))
    min_sections = math.ceil(target / section_max)
    max_sections = max(min_sections, min(MAX_SECTIONS, target // section_min))
    suggested = min(max_sections, max(min_sections, round(target / SUGGESTED_SECTION_WORDS)))
    return PlanBounds(min_sections, max_sections, section_min, section_max, suggested)


def _clean_label(text: Any) -> str:
    return " ".join(str(text or "").split())


def repair_plan(raw_sections: list[dict[str, Any]], target: int) -> tuple[list[dict[str, Any]], list[str]]:
    """Make a model's plan usable: sections with text, a count within the bounds, integer
    budgets within the per-section range that add up to `target` exactly. Deterministic.

    Returns (sections [{title, main_point, words}], notes on what was changed)."""
    bounds = plan_bounds(target)
    notes: list[str] = []
    sections = []
    for s in raw_sections:
        title, point = _clean_label(s.get("title")), _clean_label(s.get("main_point"))
        if not title and not point:
            continue
        words = s.get("words")
        words = words if isinstance(words, (int, float)) and not isinstance(words, bool) and words > 0 else 0
        sections.append({"title": title or point[:80], "main_point": point or title, "words": float(words)})
    if len(sections) < len(raw_sections):
        notes.append(f"dropped {len(raw_sections) - len(sections)} empty section(s)")
    if not sections:
        raise StructuredOutputError("the plan has no usable sections")
    # Unknown budgets count as an average section.
    known = [s["words"] for s in sections if s["words"] > 0]
    fill = sum(known) / len(known) if known else 1.0
    if len(known) < len(sections):
        notes.append(f"gave {len(sections) - len(known)} section(s) without a budget an average one")
    for s in sections:
        s["words"] = s["words"] or fill

    merged = 0
    while len(sections) > bounds.max_sections:
        # Merge the adjacent pair with the smallest combined budget (the first such pair).
        i = min(range(len(sections) - 1), key=lambda k: sections[k]["words"] + sections[k + 1]["words"])
        a, b = sections[i], sections[i + 1]
        sections[i:i + 2] = [{
            "title": a["title"] if b["title"] in a["title"] else f"{a['title']} / {b['title']}",
            "main_point": a["main_point"] if b["main_point"] in a["main_point"] else f"{a['main_point']} {b['main_point']}",
            "words": a["words"] + b["words"],
        }]
        merged += 1
    if merged:
        notes.append(f"merged sections {merged} time(s) to keep at most {bounds.max_sections}")

    if len(sections) < bounds.min_sections:
        # Split: give one more part at a time to the section with the largest budget per part.
        parts = [1] * len(sections)
        for _ in range(bounds.min_sections - len(sections)):
            i = max(range(len(sections)), key=lambda k: sections[k]["words"] / parts[k])
            parts[i] += 1
        notes.append(f"split sections into {bounds.min_sections} to have at least {bounds.min_sections}")
        sections = [
            {"title": f"{s['title']} (part {k} of {n})", "main_point": f"{s['main_point']} (part {k} of {n})",
             "words": s["words"] / n} if n > 1 else s
            for s, n in zip(sections, parts) for k in range(1, n + 1)
        ]

    stated = round(sum(s["words"] for s in sections))
    budgets = distribute_budget([s["words"] for s in sections], target, bounds.section_min, bounds.section_max)
    if stated != target:
        notes.append(f"rescaled section budgets from {stated} to {target} words in total")
    for s, words in zip(sections, budgets):
        s["words"] = words
    return sections, notes


def distribute_budget(weights: list[float], total: int, low: int, high: int) -> list[int]:
    """Integers in [low, high] summing to `total`, proportional to `weights` where the range
    allows. Requires len(weights) * low <= total <= len(weights) * high."""
    n = len(weights)
    if not n * low <= total <= n * high:
        raise ValueError(f"cannot split {total} into {n} budgets of {low}..{high}")
    weight_sum = sum(weights) or 1.0
    shares = [total * w / weight_sum for w in weights]
    for _ in range(100):  # clamp, then spread what clamping moved over the entries with room
        clamped = [min(max(s, low), high) for s in shares]
        diff = total - sum(clamped)
        if abs(diff) < 1e-6:
            shares = clamped
            break
        movable = [i for i, c in enumerate(clamped) if (c < high if diff > 0 else c > low)]
        movable_weight = sum(weights[i] for i in movable) or len(movable)
        shares = clamped
        for i in movable:
            shares[i] += diff * (weights[i] or 1.0) / movable_weight
    floors = [min(max(math.floor(s + 1e-9), low), high) for s in shares]
    left = total - sum(floors)
    # Largest remainders get the leftover units (ties: earlier sections first).
    order = sorted(range(n), key=lambda i: (-(shares[i] - math.floor(shares[i] + 1e-9)), i))
    step = 1 if left > 0 else -1
    while left:
        for i in order:
            if left and low <= floors[i] + step <= high:
                floors[i] += step
                left -= step
    return floors


async def make_plan(ctx: JobContext, params: WriteParams, target: int, language: str) -> dict[str, Any]:
    """The `plan` step's output: {"sections": [...], "repairs": [...], "planned_by": "model"|"code"}."""
    bounds = plan_bounds(target)
    if bounds.max_sections == 1:
        section = {"title": "", "main_point": params.instruction[:200], "words": target}
        return {"sections": [section], "repairs": [], "planned_by": "code"}

    async def call_planner() -> dict[str, Any]:
        from agents.llm.structured import chat_json

        prompt = ctx.render(
            TEMPLATES[language]["plan"],
            instruction=params.instruction,
            target_words=target,
            language=language,
            language_name=LANGUAGE_NAMES[language],
            unit_name=UNIT_NAMES[language],
            unit_short=UNIT_SHORT[language],
            min_sections=bounds.min_sections,
            max_sections=bounds.max_sections,
            suggested_sections=bounds.suggested_sections,
            section_min=bounds.section_min,
            section_max=bounds.section_max,
        )
        messages = [{"role": "user", "content": prompt}]
        wanted = params.max_tokens_per_call or DEFAULT_MAX_TOKENS_PER_CALL
        room = output_room(ctx.llm.context_window, await count_message_tokens(ctx.llm, messages))
        if room < MIN_OUTPUT_TOKENS:
            raise LLMBadRequest(f"the instruction does not fit the model's {ctx.llm.context_window}-token context")
        # Every section of the piece waits on the plan: it goes before any section call.
        urgency = bounds.max_sections + 1
        options = _options(params, params.plan_model or params.write_model, min(wanted, room), ctx.request_priority(urgency))
        value, _ = await chat_json(ctx.llm, messages, plan_schema(bounds), options)
        sections, repairs = repair_plan(value["sections"], target)
        return {"sections": sections, "repairs": repairs, "planned_by": "model"}

    return await ctx.step("plan", call_planner)


def _options(params: WriteParams, model: str | None, max_tokens: int, priority: int | None = None) -> GenOptions:
    return GenOptions(
        max_tokens=max_tokens,
        temperature=TEMPERATURE if params.temperature is None else params.temperature,
        top_p=TOP_P if params.top_p is None else params.top_p,
        seed=params.seed,
        model=model,
        priority=priority,
    )


# -- section text clean-up ---------------------------------------------------------------------

_LABEL = re.compile(
    r"^(?P<heading>\s*#+\s*)?(?:\*\*)?(?:(?:paragraph|section|part)\s+\d+|第\s*[\d一二三四五六七八九十百]+\s*(?:段|部分|节))"
    r"(?:\*\*)?(?:\s*[:：.、\-–—]\s*|\s*$)",
    re.I,
)
_PLAN_ECHO = re.compile(r"\b(?:main point|word count)\s*:|字数\s*[:：]", re.I)


def strip_labels(text: str) -> str:
    """Drop a leading "Paragraph N" / "Section N:" / "第N段" label and an echoed plan line."""
    lines = text.strip().split("\n")
    if lines and _PLAN_ECHO.search(lines[0]) and len(lines) > 1:
        lines = lines[1:]
    if lines:
        first = _LABEL.sub(lambda m: m.group("heading") or "", lines[0], count=1)
        lines[0] = first
        if not first.strip(" #*"):
            lines = lines[1:]
    return "\n".join(lines).strip()


# -- writing -----------------------------------------------------------------------------------


def _section_tokens(words: int, language: str, cap: int, per_word: float | None = None) -> int:
    return lc.tokens_for_words(words, language, cap, per_word)


def server_tokens_per_word(written: list[dict[str, Any]]) -> float | None:
    """The server's tokens per word over sections written so far (their stored `tokens`, the
    server's own count); None before the first."""
    words = sum(p["words"] for p in written if "tokens" in p)
    return sum(p["tokens"] for p in written if "tokens" in p) / words if words else None


@dataclasses.dataclass(frozen=True)
class PriorText:
    """The text so far as a prompt shows it: `omitted` leading sections left out, or only
    the end of the last section (`partial`), when the whole does not fit."""

    text: str
    omitted: int = 0
    partial: bool = False

    @property
    def compacted(self) -> bool:
        return bool(self.omitted or self.partial)


async def fit_prior(ctx: JobContext, previous: list[dict[str, Any]], budget_tokens: int) -> PriorText:
    """The most recent sections that fit in `budget_tokens` (all of them when they fit; the
    final paragraphs of the last one when not even it fits). Uses the token counts stored
    with each section, so it is deterministic and costs no extra calls on replay."""
    joins = 2 * max(0, len(previous) - 1)
    if sum(p["tokens"] for p in previous) + joins <= budget_tokens:
        return PriorText("\n\n".join(p["text"] for p in previous))
    used, fits = 0, 0
    for p in reversed(previous):
        if used + p["tokens"] + 2 > budget_tokens:
            break
        used += p["tokens"] + 2
        fits += 1
    if fits:
        # Leave sections out in blocks, so that the start of the shown text stays the same
        # for several sections in a row and the server's prefix cache keeps hitting.
        block = max(1, fits // 2)
        omitted = min(len(previous) - 1, math.ceil((len(previous) - fits) / block) * block)
        return PriorText("\n\n".join(p["text"] for p in previous[omitted:]), omitted=omitted)
    used = 0
    tail: list[str] = []
    for paragraph in reversed(split_paragraphs(previous[-1]["text"])):
        tokens = await ctx.llm.count_tokens(paragraph) + 2
        if used + tokens > budget_tokens:
            break
        tail.insert(0, paragraph)
        used += tokens
    return PriorText("\n\n".join(tail), omitted=len(previous), partial=bool(tail))


async def write_section(
    ctx: JobContext,
    params: WriteParams,
    plan: list[dict[str, Any]],
    index: int,
    previous: list[dict[str, Any]],
    language: str,
) -> dict[str, Any]:
    """Write section `index` (1-based) after the `previous` section outputs. Runs inside its
    step: a short or cut-off section is continued with further calls (bounded), one far
    over budget is trimmed at a paragraph boundary."""
    section = plan[index - 1]
    budget = int(section["words"])
    cap = params.max_tokens_per_call or DEFAULT_MAX_TOKENS_PER_CALL
    max_calls = 3 + math.ceil(budget / SUGGESTED_SECTION_WORDS)
    window = ctx.llm.context_window
    compacted = False

    def render(prior: PriorText, continuation: str, more_words: int) -> list[dict[str, str]]:
        prompt = ctx.render(
            TEMPLATES[language]["section"],
            instruction=params.instruction,
            sections=plan,
            section=section,
            index=index,
            prior_text=prior.text,
            omitted=prior.omitted,
            partial=prior.partial,
            continuation=continuation,
            more_words=more_words,
            language_name=LANGUAGE_NAMES[language],
            unit_short=UNIT_SHORT[language],
        )
        return [{"role": "user", "content": prompt}]

    async def call(text: str, more: int) -> tuple[str, str]:
        nonlocal compacted
        wanted = _section_tokens(more, language, cap, server_tokens_per_word(previous))
        # The prompt without the text so far; whatever room is left holds as much of it as fits.
        base_tokens = await count_message_tokens(ctx.llm, render(PriorText("", omitted=index - 1), text, more))
        room_for_prior = output_room(window, base_tokens) - wanted - PRIOR_FRAME_TOKENS
        if room_for_prior < 0:  # even without the text so far: shrink the output instead
            wanted, room_for_prior = output_room(window, base_tokens) - PRIOR_FRAME_TOKENS, 0
            if wanted < MIN_OUTPUT_TOKENS:
                raise LLMBadRequest(
                    f"section {index}: the instruction and plan leave no room in the model's {window}-token context"
                )
        prior = await fit_prior(ctx, previous, room_for_prior)
        compacted = compacted or prior.compacted
        # Sections still to write after this call: a long chain goes first, so a batch ends together.
        urgency = len(plan) - index + 1
        options = _options(params, params.write_model, wanted, ctx.request_priority(urgency))
        result = await ctx.llm.chat(render(prior, text, more), options)
        return result.text, result.finish_reason

    def join(text: str, piece: str, finish: str) -> str:
        # After a clean stop the continuation is a new paragraph; after a cut it resumes the paragraph.
        joiner = ("" if language == "zh" else " ") if finish == "length" else "\n\n"
        return f"{text}{joiner}{piece}"

    # The controller's loop: continued while under 90% of the budget, a bounded number of calls.
    grown = await lc.grow(call, budget, max_calls=max_calls, join=join, count=count_words, first=strip_labels)
    if not grown.text:
        raise EmptyModelOutput(f"section {index}: the model returned no text")
    text, finish, calls = grown.text, grown.finish, grown.calls

    # Trim one far over budget; and one cut off at max_tokens that is over budget at all
    # (it has no real ending to keep, and a rambling model would otherwise inflate the piece).
    trimmed = False
    if lc.should_trim(count_words(text), budget, truncated=finish == "length"):
        text, trimmed = trim_to_budget(text, budget), True
    return {
        "title": section["title"],
        "target_words": budget,
        "text": text,
        "words": count_words(text),
        "tokens": await ctx.llm.count_tokens(text),  # for fitting later prompts, without recounting
        "calls": calls,
        "finish_reason": finish,
        "truncated": finish == "length",
        "trimmed": trimmed,
        "compacted": compacted,
    }


async def write_single(ctx: JobContext, params: WriteParams, target: int, language: str) -> dict[str, Any]:
    """The baseline: one call for the whole piece. max_tokens is sized to the target as a
    section's is (a model that loops stops there, not at the end of its context); an answer
    cut off there ends at its last complete sentence."""

    async def call() -> dict[str, Any]:
        prompt = ctx.render(
            TEMPLATES[language]["single"],
            instruction=params.instruction,
            target_words=target,
            language_name=LANGUAGE_NAMES[language],
            unit_short=UNIT_SHORT[language],
        )
        messages = [{"role": "user", "content": prompt}]
        room = output_room(ctx.llm.context_window, await count_message_tokens(ctx.llm, messages))
        max_tokens = min(room, params.max_tokens_per_call or _section_tokens(target, language, SINGLE_MAX_TOKENS))
        if max_tokens < MIN_OUTPUT_TOKENS:
            raise LLMBadRequest(f"the instruction does not fit the model's {ctx.llm.context_window}-token context")
        result = await ctx.llm.chat(messages, _options(params, params.write_model, max_tokens))
        text = result.text.strip()
        if not text:
            raise EmptyModelOutput("the model returned no text")
        if result.truncated:
            text = cut_to_sentence_end(text) or text
        return {
            "title": "",
            "target_words": target,
            "text": text,
            "words": count_words(text),
            "calls": 1,
            "tokens": result.completion_tokens,
            "finish_reason": result.finish_reason,
            "truncated": result.truncated,
            "trimmed": False,
            "compacted": False,
        }

    return await ctx.step("single", call)


async def score_quality(ctx: JobContext, params: WriteParams, text: str) -> dict[str, Any]:
    """The `judge` step: {"status": "scored", "ratings", "S_q", ...} | {"status": "missing", "error"}."""
    judge = ctx.judge

    async def call() -> dict[str, Any]:
        prompt = None
        if params.protocol == "paper":
            prompt = ctx.render_text(paper.JUDGE_TEMPLATE, lambda t: paper.fill(t, INST=params.instruction, RESPONSE=text))
        return await judge_quality(judge, params.instruction, text, render=ctx.render, prompt=prompt)

    return await ctx.step("judge", call)


async def run(ctx: JobContext, params: WriteParams) -> dict[str, Any]:
    """Run a `write` job; the result is a dict of the shape of `WriteResult` (below)."""
    max_target = ctx.settings.max_target_words
    target, target_source, demand = await resolve_demand(ctx, params, max_target)
    language = resolve_language(params.instruction, params.language)

    if params.protocol == "paper":
        # The paper states a length only in the instruction: a given target the instruction
        # does not state is added to it as a sentence (and recorded as a difference).
        instruction = params.instruction
        stated = target_source == "given" and parse_target_words(instruction) is None
        if stated:
            instruction = with_stated_length(instruction, target, language)
        repairs: list[str] = []
        if params.method == "single":
            plan: list[dict[str, Any]] = []
            outputs = [await paper.write_single(ctx, params, instruction)]
        else:
            plan, outputs = await paper.write(ctx, params, instruction)
        differs = paper.differences(params, stated, outputs)
    elif params.method == "single":
        plan = []
        repairs = []
        outputs = [await write_single(ctx, params, target, language)]
        await ctx.progress(outputs[0]["words"], target, section=1, sections=1, unit="words")
        differs = controlled_differences(params, target)
    else:
        plan, repairs, outputs = await write_planned(ctx, params, target, language)
        differs = controlled_differences(params, target)

    text = "\n\n".join(o["text"] for o in outputs)
    word_count = count_words(text)
    scores: dict[str, Any] = {
        "S_l": length_score(word_count, target),
        "S_q": None,
        "S": None,
        "quality": None,
        "quality_status": "not_requested" if not params.judge else "not_configured",
        "quality_error": None,
    }
    if params.judge and ctx.judge is not None:
        verdict = await score_quality(ctx, params, text)
        scores["quality_status"] = verdict["status"]
        if verdict["status"] == "scored":
            scores["quality"], scores["S_q"] = verdict["ratings"], verdict["S_q"]
            scores["S"] = overall_score(scores["S_l"], scores["S_q"])
        else:
            scores["quality_error"] = verdict.get("error")
    return {
        "text": text,
        "word_count": word_count,
        "target_words": target,
        "target_source": target_source,
        "language": language,
        "method": params.method,
        "length_demand": demand.as_dict() if demand else None,
        "plan": plan,
        "plan_repairs": repairs,
        "truncated": any(o["truncated"] for o in outputs),
        "sections": [{k: v for k, v in o.items() if k not in ("text", "tokens")} for o in outputs],
        "scores": scores,
        "protocol": protocol_record(ctx, params.protocol, differs, templates_used(params, language, plan, scores)),
    }


async def write_planned(ctx: JobContext, params: WriteParams, target: int,
                        language: str) -> tuple[list[dict[str, Any]], list[str], list[dict[str, Any]]]:
    """AgentWrite under the controlled protocol: the plan (step `plan`), then each section in
    order (steps `section/{i}`). Returns (plan sections, plan repairs, section outputs). The
    length controller calls this for targets beyond one call."""
    planned = await make_plan(ctx, params, target, language)
    plan, repairs = planned["sections"], planned["repairs"]
    outputs: list[dict[str, Any]] = []
    written = 0
    for i in range(1, len(plan) + 1):
        previous = list(outputs)
        output = await ctx.step(
            f"section/{i}", lambda i=i, previous=previous: write_section(ctx, params, plan, i, previous, language)
        )
        outputs.append(output)
        written += output["words"]
        await ctx.progress(written, target, section=i, sections=len(plan), unit="words")
    return plan, repairs, outputs


def templates_used(params: WriteParams, language: str, plan: list[dict[str, Any]], scores: dict[str, Any]) -> list[str]:
    """The templates a run rendered (replayed steps render nothing, so this is worked out)."""
    if params.protocol == "paper":
        used = [] if params.method == "single" else [paper.PLAN_TEMPLATE, paper.WRITE_TEMPLATE]
    elif params.method == "single":
        used = [TEMPLATES[language]["single"]]
    else:
        used = ([TEMPLATES[language]["plan"]] if len(plan) > 1 else []) + [TEMPLATES[language]["section"]]
    if scores["quality_status"] in ("scored", "missing"):
        used.append(paper.JUDGE_TEMPLATE if params.protocol == "paper" else JUDGE_TEMPLATE)
    return used


def controlled_differences(params: WriteParams, target: int) -> list[str]:
    """How a controlled run differs from the published method (see agentwrite_paper)."""
    temperature = TEMPERATURE if params.temperature is None else params.temperature
    if params.method == "single":
        out = ["prompt: states the target length (paper: the instruction alone)"]
        if temperature != paper.SINGLE_TEMPERATURE:
            out.append(f"temperature: {temperature} (paper: {paper.SINGLE_TEMPERATURE})")
        return out
    bounds = plan_bounds(target)
    out = []
    if bounds.max_sections == 1:
        out.append(f"plan: none for targets of at most {SHORT_TARGET_WORDS} words, one section (paper: always a plan)")
    else:
        out.append("plan: JSON sections repaired in code so budgets add up to the target (paper: free-text lines, unchecked)")
        if (bounds.section_min, bounds.section_max) != (SECTION_MIN_WORDS, SECTION_MAX_WORDS):
            out.append(f"section length: {bounds.section_min}-{bounds.section_max} words "
                       f"(paper: {SECTION_MIN_WORDS}-{SECTION_MAX_WORDS})")
        out.append("text so far: the most recent sections that fit the context (paper: all of it)")
    out.append(f"length control: sections under {CONTINUE_BELOW:.0%} of budget continued, over "
               f"{TRIM_ABOVE:.0%} trimmed (paper: one call per section, kept as written)")
    if temperature != paper.TEMPERATURE:
        out.append(f"temperature: {temperature} (paper: {paper.TEMPERATURE})")
    return out


# -- the result ------------------------------------------------------------------------------------


class PlanSection(BaseModel):
    """One planned section (after `repair_plan`); `title` is "" for a one-section plan made in code."""

    model_config = ConfigDict(extra="forbid")

    title: str
    main_point: str
    words: int = Field(description="the section's budget in words (字 for Chinese)")


class WrittenSection(BaseModel):
    """One written section (the single method writes one); its text is part of `text`."""

    model_config = ConfigDict(extra="forbid")

    title: str
    target_words: int = Field(description="the section's budget")
    words: int = Field(description="words written")
    calls: int = Field(description="model calls, continuations included")
    finish_reason: str = Field(description="of the last call")
    truncated: bool = Field(description="the last call was cut off at max_tokens")
    trimmed: bool = Field(description="cut back at a paragraph boundary for running far over budget")
    compacted: bool = Field(description="a prompt showed only part of the text so far")


QualityStatus = Literal["scored", "missing", "not_configured", "not_requested"]


class WriteScores(BaseModel):
    """LongBench-Write scores: S_l always; S_q and S only when the judge scored the piece."""

    model_config = ConfigDict(extra="forbid")

    S_l: float = Field(description="length score, 0..100")
    S_q: float | None = Field(description="judged quality score, 0..100")
    S: float | None = Field(description="(S_l + S_q) / 2")
    quality: dict[Literal[QUALITY_DIMENSIONS], Annotated[int, Field(ge=1, le=5)]] | None = Field(
        description="the judge's 1..5 rating per quality dimension"
    )
    quality_status: QualityStatus = Field(
        description="scored; missing (the verdict never parsed); not_configured (no judge model); "
        "not_requested (params.judge was false)"
    )
    quality_error: str | None = Field(description="why the verdict is missing")


class WriteResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(description="the whole piece, sections joined by blank lines")
    word_count: int = Field(description="words (字 for Chinese) in text")
    target_words: int
    target_source: Literal["given", "instruction", "default"] = Field(description="where target_words came from")
    length_demand: LengthDemandRecord | None = Field(
        description="how the length was read (the instruction's demand, or the given target_words); "
        "controlled writes to its aim")
    language: Literal["en", "zh"]
    method: Literal["agentwrite", "single"]
    plan: list[PlanSection] = Field(description="the sections planned; empty for the single method")
    plan_repairs: list[str] = Field(description="what repair_plan changed in the model's plan")
    truncated: bool = Field(description="some section ended cut off at max_tokens")
    sections: list[WrittenSection]
    scores: WriteScores
    protocol: ProtocolRecord


def result_scores(result: WriteResult) -> list[Score]:
    # Only the numeric metrics: quality (a dict of ratings) and the status and error strings
    # are details of S_q, not metrics of their own.
    s = result.scores
    return [Score("S_l", s.S_l), Score("S_q", s.S_q), Score("S", s.S)]


KIND = JobKind(
    name="write",
    description="long-form writing (AgentWrite or single call)",
    params=WriteParams,
    result=WriteResult,
    run=run,
    version=3,  # 3: controlled writes to the demand's aim (length_target.read_length_demand)
    view=ResultView(text="text", plan="plan", plan_step="plan.sections", parts_step="section/*.text"),
    scores=result_scores,
)
