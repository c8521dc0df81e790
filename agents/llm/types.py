"""The shapes every LLM backend speaks: options, results, typed errors, the client protocol."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

Message = dict[str, str]  # {"role": "system"|"user"|"assistant", "content": "..."}


@dataclass
class GenOptions:
    """Sampling and control options for one call. vLLM extras travel in `extra`."""

    max_tokens: int = 1024
    temperature: float = 0.7
    top_p: float = 1.0
    stop: list[str] | None = None
    seed: int | None = None
    json_schema: dict[str, Any] | None = None  # enforce structured output (response_format)
    top_k: int | None = None
    repetition_penalty: float | None = None
    min_tokens: int | None = None
    priority: int | None = None  # vLLM: lower is served first
    model: str | None = None  # override the configured model name
    sticky_key: str | None = None  # keep related requests (one job) on one replica
    timeout_s: float | None = None
    # Other request fields for an OpenAI-compatible server, sent as they are (e.g. vLLM's
    # chat_template_kwargs or ignore_eos). The embedded backend ignores them.
    extra_body: dict[str, Any] | None = None


@dataclass
class LLMResult:
    text: str
    finish_reason: str  # "stop" | "length" | ...
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    model: str = ""
    endpoint: str = ""
    cached_tokens: int | None = None  # prompt tokens served from the server's prefix cache, if reported
    attempts: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"


class LLMError(Exception):
    """A model call failed. Never turned into text."""

    retryable = False

    def __init__(self, message: str, *, endpoint: str = "", status: int | None = None):
        from agents.redact import redact

        # A server's error may echo the request's Authorization header or key: the message is
        # stored as the job's error, sent in events and logged.
        super().__init__(redact(message))
        self.endpoint = endpoint
        self.status = status


class LLMTimeout(LLMError):
    retryable = True


class LLMConnectionError(LLMError):
    retryable = True


class LLMRateLimited(LLMError):
    retryable = True


class LLMServerError(LLMError):
    retryable = True


class LLMBadRequest(LLMError):
    """4xx other than 429: the request itself is wrong (e.g. context overflow); retrying won't help."""


class LLMUnavailable(LLMError):
    """No endpoint could serve the call after all retries and failover."""


class StructuredOutputError(LLMError):
    """The model's reply never validated against the requested JSON schema."""


@runtime_checkable
class LLMClient(Protocol):
    """What agents use. One instance per worker process; safe for concurrent calls."""

    model_name: str
    context_window: int

    async def chat(self, messages: list[Message], options: GenOptions | None = None) -> LLMResult: ...

    async def complete(self, prompt: str, options: GenOptions | None = None) -> LLMResult: ...

    async def count_tokens(self, text: str) -> int: ...

    async def ensure_ready(self) -> None:
        """Learn what the server reports (model name, context window) before budgets are
        computed; never raises. A client with nothing to learn does nothing."""

    async def aclose(self) -> None: ...
