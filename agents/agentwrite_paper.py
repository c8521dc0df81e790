"""AgentWrite as published (LongWriter, `protocol: "paper"`): one plan call, then one call
per plan line, in order, each seeing the instruction, the whole plan and all text so far.

As the reference runs it: the plan is free text, one "Paragraph N - Main Point: ... - Word
Count: ..." line per step (blank lines removed), plans of more than 50 steps are refused,
200-1000 words per paragraph are asked for in the prompt and nothing checks them, no section
is continued or trimmed, nothing is left out of the text so far, temperature 1.0 and
max_tokens 4096 per call. The single-call baseline sends the instruction alone, as
LongBench-Write's evaluation does, at its temperature 0.5.

What stays Longform's because it is safety, not method: an empty answer fails the job
instead of being stored; limits come from the server, counted by its own tokenizer
(max_tokens shrinks to what the context leaves; once all text so far would leave less room
than the section's stated word count needs at the server's measured tokens per word, the
prompt shows only the most recent sections that leave it, recorded as a difference;
a prompt that cannot fit even so fails with that reason); "Paragraph N" labels are
removed (the paper's post-processing).

Prompts: `longwriter/plan.txt` and `longwriter/write.txt`, filled as the reference fills
its `plan.txt` and `write.txt` ($INST$, $PLAN$, $TEXT$, $STEP$ replaced), and the S_q judge's
`longwriter/judge.txt` (its evaluation's `judge.txt`: $INST$, $RESPONSE$; temperature 0.5,
max_tokens 1024, the verdict still schema-constrained), so the original files work when
overlaid (PROMPTS_DIR); the bundled ones are Longform's own wording.
"""
from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any

from agents import length_control as lc
from agents.llm.tokens import count_message_tokens, output_room
from agents.llm.types import GenOptions, LLMBadRequest
from agents.text import count_words

if TYPE_CHECKING:
    from agents.agentwrite import WriteParams
    from agents.context import JobContext

PLAN_TEMPLATE = "longwriter/plan.txt"
WRITE_TEMPLATE = "longwriter/write.txt"
JUDGE_TEMPLATE = "longwriter/judge.txt"  # LongBench-Write's judge.txt ($INST$, $RESPONSE$)
TEMPERATURE = 1.0  # the reference's AgentWrite calls
SINGLE_TEMPERATURE = 0.5  # LongBench-Write's evaluation setting
TOP_P = 1.0
MAX_TOKENS = 4096  # per plan and section call
SINGLE_MAX_TOKENS = 32768  # open models in the paper's evaluation
MAX_STEPS = 50  # the reference skips longer plans
MIN_OUTPUT_TOKENS = 128

_STEP = re.compile(
    r"^\W*(?P<title>(?:paragraph|section|part)\s*\d+|第\s*[\d一二三四五六七八九十百]+\s*段)\W*"
    r"(?:main\s*point|主要内容|要点)?\s*[:：]?\s*(?P<point>.*?)"
    r"(?:\s*[-–—|]\s*(?:word\s*count|字数)\s*[:：]\s*(?P<words>[\d,]+)\s*(?:words?|字)?\W*)?$",
    re.I,
)


def fill(template: str, **slots: str) -> str:
    """The reference's filling: each $NAME$ replaced by its text."""
    for name, value in slots.items():
        template = template.replace(f"${name}$", value)
    return template


def plan_steps(plan_text: str) -> list[str]:
    """The plan's steps as the reference reads them (blank lines removed, one step a line);
    lines left empty by runs of blank lines are dropped rather than written."""
    return [line for line in plan_text.strip().replace("\n\n", "\n").split("\n") if line.strip()]


def describe_step(line: str) -> dict[str, Any]:
    """A plan line as a plan section {title, main_point, words} (words 0 when it states none)."""
    match = _STEP.match(line.strip())
    if not match:
        return {"title": line.strip()[:120], "main_point": line.strip(), "words": 0}
    words = match.group("words")
    return {
        "title": match.group("title"),
        "main_point": (match.group("point") or line).strip(),
        "words": int(words.replace(",", "")) if words else 0,
    }


def _options(params: "WriteParams", model: str | None, max_tokens: int, temperature: float) -> GenOptions:
    return GenOptions(
        max_tokens=max_tokens,
        temperature=params.temperature if params.temperature is not None else temperature,
        top_p=params.top_p if params.top_p is not None else TOP_P,
        seed=params.seed,
        model=model,
    )


async def _room(ctx: "JobContext", messages: list[dict[str, str]], wanted: int, what: str) -> int:
    room = output_room(ctx.llm.context_window, await count_message_tokens(ctx.llm, messages))
    if room < MIN_OUTPUT_TOKENS:
        raise LLMBadRequest(f"{what} does not fit the model's {ctx.llm.context_window}-token context")
    return min(wanted, room)


async def make_plan(ctx: "JobContext", params: "WriteParams", instruction: str) -> dict[str, Any]:
    """The `plan` step: {"plan_text", "steps"}."""
    from agents.agentwrite import EmptyModelOutput

    async def call() -> dict[str, Any]:
        prompt = ctx.render_text(PLAN_TEMPLATE, lambda t: fill(t, INST=instruction))
        messages = [{"role": "user", "content": prompt}]
        max_tokens = await _room(ctx, messages, params.max_tokens_per_call or MAX_TOKENS, "the plan prompt")
        result = await ctx.llm.chat(messages, _options(params, params.plan_model or params.write_model, max_tokens, TEMPERATURE))
        plan_text = result.text.strip()
        steps = plan_steps(plan_text)
        if not steps:
            raise EmptyModelOutput("the model returned no plan")
        if len(steps) > MAX_STEPS:
            raise ValueError(f"the plan has {len(steps)} steps; AgentWrite (paper) refuses plans of more than {MAX_STEPS}")
        return {"plan_text": plan_text, "steps": steps}

    return await ctx.step("plan", call)


def answer_tokens(step: str, previous: list[dict[str, Any]], wanted: int) -> int:
    """Tokens a section's answer needs on this server: its plan line's word count at the
    server's own tokens per word, measured on the sections written so far (`wanted`, the
    call's max_tokens, when the line states no count or nothing is written yet)."""
    from agents.agentwrite import server_tokens_per_word

    words, per_word = describe_step(step)["words"], server_tokens_per_word(previous)
    if not words or per_word is None:
        return wanted
    return min(wanted, math.ceil(words * per_word * lc.MAX_TOKENS_HEADROOM))


async def write_step(
    ctx: "JobContext", params: "WriteParams", instruction: str, plan_text: str, step: str, index: int,
    previous: list[dict[str, Any]],
) -> dict[str, Any]:
    """One section: one call, kept as it comes (labels removed). The prompt holds all text so
    far, as published, while that leaves the server room for the answer; beyond that only the
    most recent sections that do (`compacted`, recorded as a difference from the paper)."""
    from agents.agentwrite import PRIOR_FRAME_TOKENS, EmptyModelOutput, fit_prior, strip_labels

    def messages_with(text_so_far: str) -> list[dict[str, str]]:
        prompt = ctx.render_text(
            WRITE_TEMPLATE, lambda t: fill(t, INST=instruction, PLAN=plan_text, TEXT=text_so_far.strip(), STEP=step)
        )
        return [{"role": "user", "content": prompt}]

    window = ctx.llm.context_window
    wanted = params.max_tokens_per_call or MAX_TOKENS
    previous = [p if "tokens" in p else {**p, "tokens": await ctx.llm.count_tokens(p["text"])} for p in previous]
    messages = messages_with("\n\n".join(p["text"] for p in previous))
    needed = answer_tokens(step, previous, wanted)
    compacted = False
    if previous and output_room(window, await count_message_tokens(ctx.llm, messages)) < needed:
        room_for_prior = output_room(window, await count_message_tokens(ctx.llm, messages_with(""))) - needed
        prior = await fit_prior(ctx, previous, max(0, room_for_prior - PRIOR_FRAME_TOKENS))
        messages, compacted = messages_with(prior.text), True
    max_tokens = await _room(ctx, messages, wanted, f"section {index}")
    result = await ctx.llm.chat(messages, _options(params, params.write_model, max_tokens, TEMPERATURE))
    text = strip_labels(result.text.strip())
    if not text:
        raise EmptyModelOutput(f"section {index}: the model returned no text")
    planned = describe_step(step)
    return {
        "title": planned["title"],
        "target_words": planned["words"],
        "text": text,
        "words": count_words(text),
        "tokens": await ctx.llm.count_tokens(text),  # the server's count, for fitting later prompts
        "calls": 1,
        "finish_reason": result.finish_reason,
        "truncated": result.truncated,
        "trimmed": False,
        "compacted": compacted,
    }


async def write(ctx: "JobContext", params: "WriteParams", instruction: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Plan, then every step in order: (plan sections, written sections)."""
    planned = await make_plan(ctx, params, instruction)
    outputs: list[dict[str, Any]] = []
    written = 0
    steps = planned["steps"]
    for i, step in enumerate(steps, 1):
        previous = list(outputs)
        output = await ctx.step(
            f"section/{i}",
            lambda i=i, step=step, previous=previous: write_step(
                ctx, params, instruction, planned["plan_text"], step, i, previous
            ),
        )
        outputs.append(output)
        written += output["words"]
        await ctx.progress(i, len(steps), section=i, sections=len(steps), words=written)
    return [describe_step(s) for s in steps], outputs


async def write_single(ctx: "JobContext", params: "WriteParams", instruction: str) -> dict[str, Any]:
    """The baseline as LongBench-Write runs it: the instruction alone, one call."""
    from agents.agentwrite import EmptyModelOutput

    async def call() -> dict[str, Any]:
        messages = [{"role": "user", "content": instruction}]
        max_tokens = await _room(ctx, messages, params.max_tokens_per_call or SINGLE_MAX_TOKENS, "the instruction")
        result = await ctx.llm.chat(messages, _options(params, params.write_model, max_tokens, SINGLE_TEMPERATURE))
        text = result.text.strip()
        if not text:
            raise EmptyModelOutput("the model returned no text")
        return {
            "title": "", "target_words": 0, "text": text, "words": count_words(text), "calls": 1,
            "finish_reason": result.finish_reason, "truncated": result.truncated, "trimmed": False, "compacted": False,
        }

    return await ctx.step("single", call)


def differences(params: "WriteParams", target_stated: bool, outputs: list[dict[str, Any]]) -> list[str]:
    """The knobs of a paper run that differ from the published method, and the sections
    whose prompt could not hold all text so far on this server."""
    single = params.method == "single"
    out = []
    compacted = [i for i, o in enumerate(outputs, 1) if o.get("compacted")]
    if compacted:
        out.append(f"text so far: sections {_ranges(compacted)} were shown only the most recent sections that "
                   f"left the model's context room for the answer (paper: all of it)")
    temperature = SINGLE_TEMPERATURE if single else TEMPERATURE
    if params.temperature is not None and params.temperature != temperature:
        out.append(f"temperature: {params.temperature} (paper: {temperature})")
    if params.top_p is not None and params.top_p != TOP_P:
        out.append(f"top_p: {params.top_p} (paper: {TOP_P})")
    cap = SINGLE_MAX_TOKENS if single else MAX_TOKENS
    if params.max_tokens_per_call is not None and params.max_tokens_per_call != cap:
        out.append(f"max_tokens: {params.max_tokens_per_call} (paper: {cap})")
    if target_stated:
        out.append("target_words: added to the instruction as a sentence (paper: only the instruction states a length)")
    return out


def _ranges(numbers: list[int]) -> str:
    """[3, 4, 5, 9] -> "3-5, 9"."""
    spans: list[list[int]] = []
    for n in numbers:
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    return ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in spans)
