"""Job kind `chat`: one model call with the given messages and options."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from agents.context import JobContext
from agents.kinds import AbsentStaysAbsent, JobKind, ResultView
from agents.llm.structured import chat_json
from agents.llm.types import GenOptions


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


class ChatUsage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt_tokens: int
    completion_tokens: int


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


async def run(ctx: JobContext, params: ChatParams) -> dict[str, Any]:
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


KIND = JobKind(
    name="chat",
    description="one model call with the given messages",
    params=ChatParams,
    result=ChatResult,
    run=run,
    version=1,
    view=ResultView(text="text"),
)
