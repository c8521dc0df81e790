"""Job kind `chat`: one model call with the given messages and options; or, with a length
(`target_words`, or `length_mode` and a length the last user message states), an answer of
that length (`agents.length_control`):

- `length_mode: "prompt"`: the length is only stated (Ruler's baseline sentence); one call.
- `length_mode: "mlt"`: Ruler's Meta Length Token prefilled at the start of the answer (for
  Ruler-trained models); without a target the model's own MLT is read and reported.
- `length_mode: "controlled"` (the default when `target_words` is given under `protocol:
  controlled`): the length controller: ask, count, continue or extend when short, cut at a
  sentence end when long, regenerate loops, plan sections beyond one call.
- `protocol: "paper"` always means "prompt".

`target_words` is a number, or ">800" (Ruler's open-ended TLG target: "more than 800 words",
read as at least 800, [800, 1200]); a number above 800 is scored against ">800" for PM/FM.
The result then reports the strategy, the counter (`words`, CJK-aware, the default; `runs`,
Ruler's `\\w+`), the count, within_10pct / within_20pct of the aim, PM and FM when the target is
one of the nine TLG targets (always counted in `\\w+` runs, their definition), and the quality
filters (no repeated 10-word n-gram, an end at a sentence end).
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from agents import length_control as lc
from agents.context import JobContext
from agents.kinds import AbsentStaysAbsent, JobKind, ResultView
from agents.length_target import (
    LengthDemand,
    LengthDemandRecord,
    given_demand,
    make_demand,
    read_demand,
    read_length_demand,
    validate_target_words,
)
from agents.llm.structured import chat_json
from agents.llm.types import GenOptions
from agents.metrics.ruler import tlg_target
from agents.protocol import PROTOCOL_FIELD_DESCRIPTION, Protocol



class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class ChatParams(BaseModel):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int = Field(default=512, ge=1, le=131072)
    temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    stop: list[str] | None = None
    seed: int | None = None
    json_schema: dict[str, Any] | None = None  # the reply must validate; result.json holds it
    model: str | None = None
    target_words: int | Literal[">800"] | None = Field(
        None, description='the answer\'s length in words (字 for Chinese), or ">800" (more than 800)')
    length_mode: lc.LengthMode | None = Field(
        None, description="prompt: state the length; mlt: Ruler's Meta Length Token (Ruler-trained models); "
        "controlled: the length controller (the default with target_words under protocol controlled)")
    counter: lc.CounterName = Field("words", description="words: English words and 字 (CJK-aware); runs: "
                                    "Ruler's \\w+ runs (TLG)")
    protocol: Protocol = Field("controlled", description=PROTOCOL_FIELD_DESCRIPTION + "; paper: length_mode prompt")
    max_attempts: int | None = Field(
        None, ge=1, le=50, description="controlled: model calls at most for one answer (default: 6, one more "
        "per 150 words of the target beyond 300)")
    single_call_words: int | None = Field(
        None, ge=1, description="controlled: above this many words, plan sections (default: the "
        "length_single_call_words setting, 1,500)")

    @field_validator("json_schema")
    @classmethod
    def _valid_schema(cls, schema: dict[str, Any] | None) -> dict[str, Any] | None:
        if schema is not None:
            from jsonschema import Draft202012Validator, SchemaError

            try:
                Draft202012Validator.check_schema(schema)
            except SchemaError as exc:
                raise ValueError(f"json_schema is not a valid JSON schema: {exc.message}") from None
        return schema

    @field_validator("messages")
    @classmethod
    def _has_content(cls, messages: list[ChatMessage]) -> list[ChatMessage]:
        if not any(m.content.strip() for m in messages):
            raise ValueError("messages must contain some text")
        return messages

    @field_validator("target_words")
    @classmethod
    def _target_in_range(cls, value: int | str | None, info: ValidationInfo) -> int | str | None:
        return validate_target_words(value, info.context)

    @model_validator(mode="after")
    def _length_request(self) -> "ChatParams":
        if self.protocol == "paper" and self.length_mode not in (None, "prompt"):
            raise ValueError(f"length_mode {self.length_mode!r} is not the paper protocol's: "
                             "protocol paper only states the length (length_mode prompt)")
        mode = self.resolved_length_mode
        if mode is None:
            return self
        if self.json_schema is not None:
            raise ValueError("json_schema cannot be combined with a length (target_words or length_mode)")
        if not any(m.role == "user" for m in self.messages):
            raise ValueError("a length-controlled chat needs a user message")
        if self.target_words is None and mode != "mlt" and read_demand(self.last_user) is None:
            raise ValueError(f"length_mode {mode!r} needs target_words (the last user message states no length)")
        return self

    @property
    def last_user(self) -> str:
        return next((m.content for m in reversed(self.messages) if m.role == "user"), "")

    @property
    def resolved_length_mode(self) -> str | None:
        """The length mode that runs: paper always "prompt"; a given mode; "controlled" when
        target_words is given; None: a plain call."""
        if self.protocol == "paper":
            return "prompt" if (self.target_words is not None or self.length_mode) else None
        if self.length_mode is not None:
            return self.length_mode
        return "controlled" if self.target_words is not None else None


class ChatUsage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt_tokens: int
    completion_tokens: int


class LengthWindow(BaseModel):
    model_config = ConfigDict(extra="forbid")

    low: int
    high: int


class LengthFilters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    repeated_ngram: bool
    ends_at_sentence_end: bool


class LengthAttempt(BaseModel):
    model_config = ConfigDict(extra="forbid")

    step: str
    action: Literal["answer", "continue", "reask", "extend", "shorten", "section"]
    words: int = Field(description="after loops were cut away")
    looped: bool = Field(description="the text repeated itself (cut back before the repetition)")


class ChatResult(AbsentStaysAbsent):
    """What `run` returns. `json` is there only when the params gave a json_schema."""

    # The key is "json"; the attribute is json_value because BaseModel has a json() method.
    model_config = ConfigDict(extra="forbid", serialize_by_alias=True)

    text: str = Field(description="the model's reply")
    # Absent (not null) without a json_schema; with one it holds the validated value, which may
    # itself be null.
    json_value: Any = Field(
        default=None, alias="json", description="the reply parsed as JSON (only when json_schema was given)"
    )
    finish_reason: str = Field(description='why generation stopped: "stop", "length", ...')
    model: str = Field(description="the model that answered, as the server names it")
    usage: ChatUsage
    # Only with a length (target_words or length_mode):
    length_mode: lc.LengthMode | None = None
    target_words: int | Literal[">800"] | None = Field(None, description="as given, or as the message states it")
    target_source: Literal["given", "message"] | None = None
    length_demand: LengthDemandRecord | None = Field(None, description="how the length was read")
    aim: int | None = Field(None, description="the length written to (counts of `counter`)")
    window: LengthWindow | None = Field(None, description="controlled: the counts accepted")
    strategy: Literal["single", "mlt", "continued", "reasked", "extended", "rewritten", "trimmed",
                      "sections"] | None = Field(
        None, description="what produced the text: single (one answer), mlt, continued, reasked (asked anew for "
        "more), extended, rewritten (shortened by a call), trimmed (cut at a sentence end), sections (AgentWrite)")
    counter: lc.CounterName | None = None
    word_count: int | None = Field(None, description="counted with `counter`")
    within_10pct: bool | None = Field(None, description="of the aim")
    within_20pct: bool | None = None
    tlg_target: str | None = Field(None, description="the TLG target PM and FM are scored against")
    PM: bool | None = Field(None, description="Ruler's Precise Match (\\w+ runs)")
    FM: bool | None = Field(None, description="Ruler's Flexible Match (\\w+ runs)")
    passes_filters: bool | None = Field(None, description="no repeated 10-word n-gram, ends at a sentence end")
    filters: LengthFilters | None = None
    calls: int | None = Field(None, description="model calls made for the answer")
    attempts: list[LengthAttempt] | None = Field(None, description="each call's outcome, in order")
    sections: int | None = Field(None, description="sections written (strategy sections)")
    mlt: str | None = Field(None, description="mlt: the Meta Length Token used or chosen")
    mlt_source: Literal["target", "model"] | None = Field(None, description="mlt: from target_words or the model's own")
    mlt_placed: Literal["prefill", "prompt"] | None = Field(
        None, description="mlt with a target: prefilled, or stated in the prompt (the server refused a prefill)")


async def run(ctx: JobContext, params: ChatParams) -> dict[str, Any]:
    if params.resolved_length_mode is not None:
        return await run_with_length(ctx, params)
    options = GenOptions(
        max_tokens=params.max_tokens,
        temperature=params.temperature,
        top_p=params.top_p,
        stop=params.stop,
        seed=params.seed,
        json_schema=params.json_schema,
        model=params.model,
    )
    messages = [m.model_dump() for m in params.messages]

    async def call() -> dict[str, Any]:
        if params.json_schema is not None:  # validated on our side too, repaired or retried
            value, result = await chat_json(ctx.llm, messages, params.json_schema, options)
        else:
            value, result = None, await ctx.llm.chat(messages, options)
        return {
            "text": result.text,
            **({"json": value} if params.json_schema is not None else {}),
            "finish_reason": result.finish_reason,
            "model": result.model,
            "usage": {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens},
        }

    return await ctx.step("chat", call)


def read_target(params: ChatParams) -> tuple[int | str | None, str | None, LengthDemand | None]:
    """(target, where it came from, its demand) from the params alone (no model)."""
    if params.target_words == ">800":
        return ">800", "given", make_demand("at_least", 800, source="given", stated="more than 800")
    if params.target_words is not None:
        return params.target_words, "given", given_demand(params.target_words)
    return None, None, None


def tlg_of(target: int | str | None, demand: LengthDemand | None) -> str | None:
    """The TLG target PM/FM are scored against: ">800" given, or any number above 800; one of
    the eight numbers; a demand of at least 800 or more."""
    if target == ">800":
        return ">800"
    if isinstance(target, int):
        return tlg_target(target)
    if demand is not None:
        if demand.bound == "at_least" and demand.words >= 800:
            return ">800"
        return tlg_target(demand.words) if demand.bound == "about" else None
    return None


async def run_with_length(ctx: JobContext, params: ChatParams) -> dict[str, Any]:
    from agents.agentwrite import resolve_language

    mode = params.resolved_length_mode
    messages = [m.model_dump() for m in params.messages]
    language = resolve_language(params.last_user)
    ctl = lc.Controller(
        language=language, counter=params.counter, temperature=params.temperature, top_p=params.top_p,
        seed=params.seed, model=params.model, stop=tuple(params.stop) if params.stop else None,
        max_attempts=params.max_attempts,
        single_call_words=params.single_call_words or ctx.settings.length_single_call_words,
        max_tokens=params.max_tokens if "max_tokens" in params.model_fields_set else None,
    )
    target, source, demand = read_target(params)
    if demand is None and mode != "mlt":  # the last user message states the length
        demand = await read_length_demand(ctx, params.last_user) if mode == "controlled" \
            else read_demand(params.last_user)
        source = "message"
        target = demand.words if demand else None
    tlg = tlg_of(target if source == "given" else None, demand)
    window = None
    if mode == "prompt":
        # A given target is stated with Ruler's sentence; a length the message states is left as written.
        out = await lc.answer_prompt(ctx, messages, target if source == "given" else None, ctl, ctl.max_tokens)
    elif mode == "mlt":
        out = await lc.answer_mlt(ctx, messages, target, ctl, ctl.max_tokens)
        if target is None and out.get("mlt"):
            tlg = out["mlt"]
    else:
        goal = lc.goal_for(demand, tlg)
        window = {"low": goal.low, "high": goal.high}
        out = await lc.answer_controlled(ctx, messages, goal, ctl)
    aim = demand.aim if demand is not None else None
    result: dict[str, Any] = {
        "text": out["text"], "finish_reason": out["finish_reason"], "model": out["model"], "usage": out["usage"],
        "length_mode": mode, "target_words": target, "target_source": source,
        "length_demand": demand.as_dict() if demand else None, "aim": aim, "strategy": out["strategy"],
        **lc.length_outcome(out["text"], params.counter, language, aim, tlg),
        "calls": out["calls"], "attempts": out["attempts"],
    }
    if window is not None:
        result["window"] = window
    for key in ("sections", "mlt", "mlt_source", "mlt_placed"):
        if key in out:
            result[key] = out[key]
    return result


KIND = JobKind(
    name="chat",
    description="one model call with the given messages; or an answer of a given length (length_mode)",
    params=ChatParams,
    result=ChatResult,
    run=run,
    version=2,
    view=ResultView(text="text"),
)
