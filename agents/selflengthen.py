"""Self-Lengthen (Qwen team): a Generator answers the instruction, an Extender grows the answer.

Job kind `lengthen`: `LengthenParams` in, `run(ctx, params)` -> `LengthenResult`.

1. The initial answer: `text` when given; else the Generator (`generator_model`) answers the
   instruction alone, regenerated while it fails the quality filters, up to
   `max_initial_attempts` (the reference's 20). Steps `initial/{a}`.
2. Micro-iterations (`agents.length_control.extend`, the Extender as a tool of the length
   controller; `extender_model`): split, expand the first half, keep two thirds of it,
   continue the whole text from the kept part. Steps `expand/{i}` and `continue/{i}`. A
   candidate is accepted only when it passes the filters (`length_control.failing_filter`)
   and is longer than the best so far; it then becomes the best and the next text to extend.
3. The end, by protocol:
   - `paper`: exactly `micro_iterations` (3) rounds, then the final gate: the job fails
     unless words(best) > 1.2 x words(initial). Word counts are the reference's own
     (`agents.text.count_words_selflengthen`: CJK characters and punctuation, plus
     whitespace tokens); the reference's stop strings; max_tokens 16384 (less when the
     context leaves less).
   - `controlled` with `target_words`: rounds until the best is within 10% of the target (or
     over it), at most `max_iterations`; then, if over by more than 10%, trimmed at the cut
     nearest the target (a paragraph end within 10%, else a sentence end). An initial answer
     already long enough is only trimmed.
   - `controlled` without a target: the paper's rounds; the 1.2x gate is reported, not
     enforced (the longest accepted text is the result).
   Controlled runs count with `agents.text.count_words` (the unit of `target_words`), send
   no stop strings (the reference's "---" ends any answer with a Markdown rule) and let
   max_tokens be what the context leaves. Under `controlled`, a text grown too long for the
   model's context to extend again ends the rounds (`stopped: "context_full"`); under
   `paper` the job fails with that reason.

Which backend continues a prefilled answer, and how: see `agents.length_control`.

A model named in `generator_model` / `extender_model` is checked at the start of the run,
before any step: a one-token request with that model must be answered by that model (vLLM
answers 404 for a name it does not serve; a server that ignores the name, such as the
embedded one, answers as its own model). The job fails naming the field, with nothing stored.

Replay is exact: every prompt is built from `text`, the params and stored step outputs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from agents import length_control as lc
from agents.context import JobContext
from agents.kinds import AbsentStaysAbsent, Instruction, JobKind, ModelName, ResultView, Score
from agents.length_target import LengthDemandRecord, given_demand, read_length_demand, validate_target_words
from agents.llm.types import GenOptions, LLMBadRequest
from agents.protocol import PROTOCOL_FIELD_DESCRIPTION, Protocol, ProtocolRecord, protocol_record
from agents.settings import Settings
from agents.text import count_words, count_words_selflengthen

GATE = 1.2  # the reference keeps an extension only when it is more than 1.2x the initial answer
TOLERANCE = 0.1  # controlled: a target counts as reached within +-10%
DEFAULT_MICRO_ITERATIONS = 3
DEFAULT_MAX_ITERATIONS = 8
DEFAULT_EXTENSION_ATTEMPTS = 20  # the reference retries a job whose gate fails up to 20 times
DEFAULT_INITIAL_ATTEMPTS = 20  # the reference regenerates an initial answer up to 20 times
# The reference's sampling (llm_client.py), for both roles and both protocols.
TEMPERATURE, TOP_P, TOP_K, REPETITION_PENALTY = 0.7, 0.8, 20, 1.1

# paper: the reference's own count (agents.text.count_words_selflengthen); controlled: the default.
COUNTERS = {"words": count_words, "selflengthen": count_words_selflengthen}


# -- params ------------------------------------------------------------------------------------------


class LengthenParams(BaseModel):
    """Parameters of a `lengthen` job. Lengths are in the counter's words (`words`: English
    words and 字, as `target_words` everywhere in Longform)."""

    model_config = ConfigDict(extra="forbid")

    instruction: Instruction = Field(description="the writing instruction the text answers")
    text: str | None = Field(None, description="the initial answer; absent: the Generator writes one")
    target_words: int | None = Field(None, description="controlled: the length to reach (+-10%); paper: only reported")
    micro_iterations: int = Field(DEFAULT_MICRO_ITERATIONS, ge=1, le=20,
                                  description="rounds under paper, and under controlled without a target")
    max_iterations: int = Field(DEFAULT_MAX_ITERATIONS, ge=1, le=50,
                                description="controlled with a target: at most this many rounds")
    max_initial_attempts: int = Field(DEFAULT_INITIAL_ATTEMPTS, ge=1, le=50,
                                      description="Generator answers tried until one passes the filters")
    extension_attempts: int = Field(DEFAULT_EXTENSION_ATTEMPTS, ge=1, le=50,
                                    description="paper: fresh tries of the micro-iterations from the initial "
                                    "answer while the 1.2x gate fails (the reference's 20)")
    generator_model: ModelName = Field(None, description="default: the server's model; on vLLM a LoRA adapter (gen_sft)")
    extender_model: ModelName = Field(None, description="default: the server's model; on vLLM a LoRA adapter (ext_sft)")
    language: Literal["auto", "en", "zh"] = "auto"
    protocol: Protocol = Field("controlled", description=PROTOCOL_FIELD_DESCRIPTION)
    temperature: float = Field(TEMPERATURE, ge=0.0, le=2.0)
    top_p: float = Field(TOP_P, gt=0.0, le=1.0)
    top_k: int | None = Field(TOP_K, ge=1, description="vLLM extra; null: not sent")
    repetition_penalty: float | None = Field(REPETITION_PENALTY, gt=0.0, description="vLLM extra; null: not sent")
    max_tokens: int | None = Field(None, ge=lc.MIN_OUTPUT_TOKENS,
                                   description="a cap per call; default what the context leaves (paper: at most 16384)")
    continuation: lc.Continuation = Field(
        "auto", description="how Stage 2 continues the kept part: prefill (continue_final_message), chat "
        "(ask for the remainder), or auto (prefill, chat when the server refuses it)")
    seed: int | None = None

    @field_validator("text")
    @classmethod
    def _text_fits(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        if not value.strip():
            raise ValueError("text must not be empty (leave it out to have the Generator write one)")
        settings = (info.context or {}).get("settings")
        limit = settings.max_document_bytes if settings is not None else Settings.model_fields["max_document_bytes"].default
        size = len(value.encode("utf-8"))
        if size > limit:
            raise ValueError(f"text is {size:,} bytes; the document limit is {limit:,} bytes (MAX_DOCUMENT_BYTES)")
        return value.strip()

    @field_validator("target_words")
    @classmethod
    def _target_in_range(cls, value: int | None, info: ValidationInfo) -> int | None:
        return validate_target_words(value, info.context)


# -- the run -----------------------------------------------------------------------------------------


def resolve_language(instruction: str, requested: str) -> str:
    from agents.agentwrite import resolve_language as resolve  # the same rule as `write`

    return resolve(instruction, requested)


async def check_models(ctx: JobContext, params: LengthenParams) -> None:
    """Each model the params name must be served (see the module doc). Outside any step:
    nothing is stored, whatever the answer."""
    for field in ("generator_model", "extender_model"):
        name = getattr(params, field)
        if name is None or name == ctx.llm.model_name:
            continue
        try:
            probe = await ctx.llm.chat([{"role": "user", "content": "Hi"}],
                                       GenOptions(max_tokens=1, temperature=0.0, model=name))
        except LLMBadRequest as err:
            raise ValueError(f"{field}: the model server does not serve {name!r} ({err})") from None
        if probe.model and probe.model != name:
            raise ValueError(f"{field}: the model server answered as {probe.model!r}, not {name!r}: "
                             f"it does not serve that model (the embedded model has no adapters)")


def _generator_options(params: LengthenParams, key: str, max_tokens: int) -> GenOptions:
    paper = params.protocol == "paper"
    return GenOptions(
        max_tokens=max_tokens, temperature=params.temperature, top_p=params.top_p, top_k=params.top_k,
        repetition_penalty=params.repetition_penalty, stop=list(lc.PAPER_STOP) if paper else None,
        seed=lc.seed_for(params.seed, key), model=params.generator_model,
    )


class InitialAnswerFailed(ValueError):
    """No Generator answer passed the filters; `attempts` as in the result's `initial.attempts`."""

    def __init__(self, message: str, attempts: list[dict[str, Any]]):
        super().__init__(message)
        self.attempts = attempts


async def initial_answer(ctx: JobContext, params: LengthenParams, language: str, count,
                         key_prefix: str = "") -> dict[str, Any]:
    """{"source", "text", "attempts": [...], "filter"}; raises InitialAnswerFailed when no
    attempt passes. Steps `{key_prefix}initial/{a}` (a dataset build answers many instructions
    in one job)."""
    if params.text is not None:
        return {"source": "given", "text": params.text, "attempts": [],
                "filter": lc.failing_filter(params.text, language)}
    # The instruction alone, as the reference's Generator gets it; the same limits as the Extender's.
    cap = params.max_tokens or (lc.PAPER_MAX_TOKENS if params.protocol == "paper" else None)
    attempts = []
    for a in range(1, params.max_initial_attempts + 1):
        key = f"{key_prefix}initial/{a}"

        async def generate(key: str = key) -> dict[str, Any]:
            messages = [{"role": "user", "content": params.instruction}]
            max_tokens = await lc.answer_room(ctx, messages, cap)
            if not max_tokens:
                raise LLMBadRequest(f"the instruction does not fit the model's {ctx.llm.context_window}-token context")
            result = await ctx.llm.chat(messages, _generator_options(params, key, max_tokens))
            return {"text": result.text.strip(), "finish_reason": result.finish_reason}

        output = await ctx.step(key, generate)
        reason = lc.failing_filter(output["text"], language)
        attempts.append({"attempt": a, "words": count(output["text"]), "passed": reason is None, "reason": reason})
        if reason is None:
            return {"source": "generator", "text": output["text"], "attempts": attempts, "filter": None}
    reasons = ", ".join(f"{r['attempt']}: {r['reason']}" for r in attempts)
    raise InitialAnswerFailed(f"the Generator's answer failed the quality filters {len(attempts)} times ({reasons})",
                              attempts)


async def run(ctx: JobContext, params: LengthenParams) -> dict[str, Any]:
    paper = params.protocol == "paper"
    language = resolve_language(params.instruction, params.language)
    counter = "selflengthen" if paper else "words"
    count = COUNTERS[counter]
    # Controlled reads a length the instruction states, as `write` does; paper only reports a given one.
    # Controlled reads the instruction's demand and writes to its aim (inside the interval meant).
    target, target_source = params.target_words, "given" if params.target_words is not None else None
    demand = given_demand(target) if target is not None else None
    if target is None and not paper:
        demand = await read_length_demand(ctx, params.instruction)
        target = demand.aim if demand is not None else None
        target_source = "instruction" if target is not None else None
    await check_models(ctx, params)

    initial = await initial_answer(ctx, params, language, count)
    initial_words = count(initial["text"])
    extender = lc.Extender(
        language=language, paper=paper, model=params.extender_model, temperature=params.temperature,
        top_p=params.top_p, top_k=params.top_k, repetition_penalty=params.repetition_penalty,
        max_tokens=params.max_tokens, seed=params.seed, continuation=params.continuation,
    )
    controlled_target = target is not None and not paper
    rounds = params.max_iterations if controlled_target else params.micro_iterations
    # The reference retries a job whose gate fails: fresh rounds from the same initial answer.
    attempts = params.extension_attempts if paper else 1
    iterations: list[dict[str, Any]] = []
    for attempt in range(1, attempts + 1):
        grown = await grow(ctx, params, extender, language, count, initial["text"], rounds,
                           target if controlled_target else None, attempt, attempts)
        iterations += grown.iterations
        if grown.best_words > GATE * initial_words:
            break
    best, best_words, stopped = grown.best, grown.best_words, grown.stopped

    text, trimmed = best, False
    if controlled_target and best_words > (1 + TOLERANCE) * target:
        text = lc.trim_to_target(best, target, TOLERANCE, count)
        trimmed = text != best
    word_count = count(text)
    ratio = round(best_words / initial_words, 4) if initial_words else 0.0
    gate = {"required_ratio": GATE, "ratio": ratio, "passed": best_words > GATE * initial_words, "enforced": paper,
            "attempts": grown.attempt}
    if paper and not gate["passed"]:
        raise ValueError(f"the final gate failed: the best text has {best_words} words, not more than {GATE} x the "
                         f"initial answer's {initial_words} ({ratio:.2f}x; {attempts} attempts of "
                         f"{rounds} micro-iterations, {sum(it['accepted'] for it in iterations)} of "
                         f"{len(iterations)} candidates accepted)")

    used = {it["continued_with"] for it in iterations} - {None}
    continuation = "none" if not used else used.pop() if len(used) == 1 else "mixed"
    result: dict[str, Any] = {
        "text": text,
        "word_count": word_count,
        "counter": counter,
        "language": language,
        "initial": {**initial, "words": initial_words},
        "iterations": iterations,
        "words_per_iteration": [initial_words] + [it["best_words"] for it in grown.iterations],
        "target_words": target,
        "target_source": target_source,
        "length_demand": demand.as_dict() if demand is not None else None,
        "trimmed": trimmed,
        "final_filter": lc.failing_filter(text, language),
        "gate": gate,
        "stopped": stopped,
        "continuation": continuation,
        "models": {"generator": params.generator_model or ctx.llm.model_name,
                   "extender": params.extender_model or ctx.llm.model_name},
        "protocol": protocol_record(ctx, params.protocol, differences(params, initial, iterations, target),
                                    templates_used(extender, iterations)),
    }
    if target is not None:
        result.update(lc.length_report(word_count, target))
    return result


@dataclass
class Grown:
    """One attempt's rounds: the best text and every candidate."""

    attempt: int
    best: str
    best_words: int
    iterations: list[dict[str, Any]]
    stopped: str


async def grow(ctx: JobContext, params: LengthenParams, extender: lc.Extender, language: str, count,
               initial_text: str, rounds: int, target: int | None, attempt: int, attempts: int) -> Grown:
    """Rounds of the Extender from the initial answer; with a target, until within 10% of it.
    Attempt 1's steps are `expand/{i}` and `continue/{i}`, a later attempt's
    `attempt/{a}/expand/{i}`...: distinct keys, so distinct seeds and fresh samples."""
    key_prefix = "" if attempt == 1 else f"attempt/{attempt}/"
    best = current = initial_text
    best_words = count(initial_text)
    iterations: list[dict[str, Any]] = []
    stopped = "rounds"
    for i in range(1, rounds + 1):
        if target is not None and best_words >= (1 - TOLERANCE) * target:
            return Grown(attempt, best, best_words, iterations, "target_reached")
        outcome = await lc.extend(ctx, extender, params.instruction, current, i, key_prefix)
        if outcome.no_room:
            message = (f"iteration {i}: the text ({count(current)} words) no longer leaves room for the "
                       f"{outcome.no_room} step in the model's {ctx.llm.context_window}-token context")
            if params.protocol == "paper":
                raise LLMBadRequest(message)
            await ctx.log(message)
            return Grown(attempt, best, best_words, iterations, "context_full")
        words = count(outcome.candidate)
        reason = lc.failing_filter(outcome.candidate, language) or (None if words > best_words else "not longer")
        if reason is None:
            best = current = outcome.candidate
            best_words = words
        iterations.append({
            "attempt": attempt, "iteration": i, "split": outcome.split, "pieces": outcome.pieces,
            "first_half_pieces": outcome.first_half_pieces, "expansion_words": count(outcome.expansion),
            "expansion_paragraphs": outcome.expansion_paragraphs, "kept_paragraphs": outcome.kept_paragraphs,
            "kept_words": count(outcome.kept), "continuation_words": count(outcome.continuation),
            "continued_with": outcome.continued_with, "fallback_reason": outcome.fallback_reason,
            "candidate": outcome.candidate, "words": words, "accepted": reason is None, "reason": reason,
            "best_words": best_words,
        })
        await ctx.progress(i, rounds, words=best_words, candidate_words=words, accepted=reason is None,
                           reason=reason, attempt=attempt, attempts=attempts)
    if target is not None:
        stopped = "target_reached" if best_words >= (1 - TOLERANCE) * target else "max_iterations"
    return Grown(attempt, best, best_words, iterations, stopped)


def templates_used(extender: lc.Extender, iterations: list[dict[str, Any]]) -> list[str]:
    """The templates a run rendered (worked out: replayed steps render nothing)."""
    used = [extender.template] if iterations else []
    if any(it["continued_with"] == "chat" for it in iterations):
        used.append(lc.CONTINUE_TEMPLATES[extender.language])
    return used


def differences(params: LengthenParams, initial: dict[str, Any], iterations: list[dict[str, Any]],
                target: int | None) -> list[str]:
    """Each knob of the run that differs from the published method."""
    out = []
    if params.protocol == "controlled":
        out.append("word count: count_words, English words and 字 (paper: whitespace tokens plus CJK "
                   "characters and punctuation)")
        out.append("stop strings: none, the model's end of text (paper: '---', '\\n\\n\\n' and chat-template tokens)")
        if target is not None:
            out.append(f"length control: rounds until within {TOLERANCE:.0%} of target_words, at most "
                       f"{params.max_iterations}, then trimmed at a sentence end (paper: "
                       f"{DEFAULT_MICRO_ITERATIONS} rounds, no target)")
        else:
            out.append(f"final gate: reported, not enforced (paper: the result is dropped unless it is more than "
                       f"{GATE}x the initial answer)")
    cap = params.max_tokens
    if params.protocol == "paper" and cap is not None and cap != lc.PAPER_MAX_TOKENS:
        out.append(f"max_tokens: {cap} (paper: {lc.PAPER_MAX_TOKENS})")
    elif params.protocol == "controlled":
        out.append(f"max_tokens: {cap or 'what the context leaves'} (paper: {lc.PAPER_MAX_TOKENS})")
    for knob, value, paper_value in (
        ("micro_iterations", params.micro_iterations, DEFAULT_MICRO_ITERATIONS),
        ("temperature", params.temperature, TEMPERATURE), ("top_p", params.top_p, TOP_P),
        ("top_k", params.top_k, TOP_K), ("repetition_penalty", params.repetition_penalty, REPETITION_PENALTY),
        ("max_initial_attempts", params.max_initial_attempts, DEFAULT_INITIAL_ATTEMPTS),
        ("extension_attempts", params.extension_attempts, DEFAULT_EXTENSION_ATTEMPTS),
    ):
        if value != paper_value and not (knob in ("micro_iterations", "extension_attempts")
                                          and params.protocol == "controlled" and target is not None):
            out.append(f"{knob}: {value} (paper: {paper_value})")
    if initial["source"] == "given":
        out.append("initial answer: given, not filtered (paper: the Generator's, regenerated until it passes "
                   "the filters)")
    if any(it["continued_with"] == "chat" for it in iterations):
        out.append("stage 2: the remainder asked for by chat where the server refused a prefilled answer "
                   "(paper: a raw completion after the kept part)")
    return out


# -- the result --------------------------------------------------------------------------------------

FilterName = Literal["empty", "terminal_punctuation", "meta_talk", "repetition"]


class InitialAttempt(BaseModel):
    model_config = ConfigDict(extra="forbid")

    attempt: int
    words: int
    passed: bool
    reason: FilterName | None = Field(description="the filter it failed")


class InitialAnswer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: Literal["given", "generator"]
    text: str
    words: int
    attempts: list[InitialAttempt] = Field(description="the Generator's answers, in order (none when given)")
    filter: FilterName | None = Field(description="the filter the initial answer fails (a given text is not refused)")


class Iteration(BaseModel):
    """One micro-iteration and its candidate."""

    model_config = ConfigDict(extra="forbid")

    attempt: int = Field(description="paper: which try of the micro-iterations (a failed gate starts another)")
    iteration: int
    split: Literal["blank_lines", "lines"] = Field(description="how the text was split into pieces")
    pieces: int
    first_half_pieces: int = Field(description="pieces sent to Stage 1: floor(pieces / 2)")
    expansion_words: int = Field(description="Stage 1's expansion of the first half")
    expansion_paragraphs: int
    kept_paragraphs: int = Field(description="floor(2/3) of the expansion's paragraphs, kept")
    kept_words: int
    continuation_words: int = Field(description="Stage 2's continuation after the kept part")
    continued_with: Literal["prefill", "chat", "new_answer"] = Field(
        description="prefill: continue_final_message; chat: the remainder asked for; new_answer: nothing was kept")
    fallback_reason: str | None = Field(description="why a prefill was not used, when it was refused")
    candidate: str = Field(description="kept part + continuation")
    words: int
    accepted: bool
    reason: Literal["empty", "terminal_punctuation", "meta_talk", "repetition", "not longer"] | None = Field(
        description="why the candidate was rejected: the filter it failed, or not longer than the best")
    best_words: int = Field(description="the best text's words after this iteration")


class Gate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    required_ratio: float
    ratio: float = Field(description="words(best before any trim) / words(initial)")
    passed: bool
    enforced: bool = Field(description="paper: a failed gate fails the job; controlled: reported only")
    attempts: int = Field(description="tries of the micro-iterations run (paper retries a failed gate)")


class LengthenModels(BaseModel):
    model_config = ConfigDict(extra="forbid")

    generator: str
    extender: str


class LengthenResult(AbsentStaysAbsent):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(description="the final text")
    word_count: int
    counter: Literal["words", "selflengthen"] = Field(
        description="the counter of every count here: words (count_words, controlled) or selflengthen (the "
        "reference's, paper)")
    language: Literal["en", "zh"]
    initial: InitialAnswer
    iterations: list[Iteration]
    words_per_iteration: list[int] = Field(
        description="the best text's words: initially, then after each iteration of the last attempt")
    target_words: int | None
    length_demand: LengthDemandRecord | None = Field(
        None, description="how the length was read (the given target_words, or the instruction's demand: "
        "controlled writes to its aim)")
    target_source: Literal["given", "instruction"] | None = Field(
        description="where target_words came from (controlled reads a length the instruction states)"
    )
    within_10pct: bool | None = Field(None, description="only with a target")
    within_20pct: bool | None = Field(None, description="only with a target")
    trimmed: bool = Field(description="cut back to the target at a paragraph or sentence end")
    final_filter: FilterName | None = Field(description="the filter the final text fails, if any")
    gate: Gate
    stopped: Literal["rounds", "target_reached", "max_iterations", "context_full"]
    continuation: Literal["prefill", "chat", "new_answer", "mixed", "none"] = Field(
        description="how Stage 2 continued the kept part, over all iterations")
    models: LengthenModels
    protocol: ProtocolRecord


def result_scores(result: LengthenResult) -> list[Score]:
    return [Score("growth", result.gate.ratio)]


KIND = JobKind(
    name="lengthen",
    description="grow an answer with Self-Lengthen's Generator and Extender",
    params=LengthenParams,
    result=LengthenResult,
    run=run,
    version=3,  # 2: controlled writes to the demand's aim; 3: paper retries a failed gate
    view=ResultView(text="text", transcript="iterations"),
    scores=result_scores,
)
