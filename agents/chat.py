"""Job kind `chat`: one model call with the given messages and options."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from agents.context import JobContext
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
    json_schema: dict[str, Any] | None = None
    model: str | None = None

    @field_validator("messages")
    @classmethod
    def _has_content(cls, messages: list[ChatMessage]) -> list[ChatMessage]:
        if not any(m.content.strip() for m in messages):
            raise ValueError("messages must contain some text")
        return messages


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
        result = await ctx.llm.chat(messages, options)
        return {
            "text": result.text,
            "finish_reason": result.finish_reason,
            "model": result.model,
            "usage": {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens},
        }

    return await ctx.step("chat", call)
