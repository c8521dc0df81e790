"""The job context agents run in: checkpointed steps, progress events, the LLM client.

Agents never see the database, Celery or FastAPI. The worker hands them a `JobContext`
backed by the database; tests and notebooks use `MemoryStepStore`.

`await ctx.step(key, fn)` is the one mechanism for resume, retries, progress and token
accounting: if step `key` already succeeded, its stored output comes back without
calling `fn`; otherwise `fn()` runs, and every LLM call made inside it (through
`ctx.llm`) is added to the step's usage record.
"""
from __future__ import annotations

import asyncio
import contextvars
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Protocol

import prompts
from agents.llm.types import GenOptions, LLMClient, LLMResult, Message


class JobCancelled(Exception):
    """Raised inside an agent when its job was cancelled; finished steps stay stored."""


@dataclass
class StepUsage:
    """What one step cost, summed over every LLM call it made."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    latency_s: float = 0.0
    model: str = ""
    finish_reason: str = ""
    template: str = ""
    template_hash: str = ""

    def add(self, result: LLMResult) -> None:
        self.calls += 1
        self.prompt_tokens += result.prompt_tokens
        self.completion_tokens += result.completion_tokens
        self.cached_tokens += result.cached_tokens or 0
        self.latency_s += result.latency_s
        self.model = result.model or self.model
        self.finish_reason = result.finish_reason


@dataclass
class StepRecord:
    key: str
    output: Any
    usage: StepUsage = field(default_factory=StepUsage)


class StepStore(Protocol):
    """Where step outputs are checkpointed. Implementations must tolerate concurrent calls."""

    async def succeeded(self) -> dict[str, Any]:
        """Outputs of every step of this job that already succeeded, by key."""

    async def started(self, key: str) -> None: ...

    async def finished(self, key: str, output: Any, usage: StepUsage) -> None: ...

    async def failed(self, key: str, error: str, usage: StepUsage) -> None: ...


class EventSink(Protocol):
    async def emit(self, type: str, data: dict[str, Any]) -> None: ...


class MemoryStepStore:
    """In-memory checkpoints: for tests and notebooks."""

    def __init__(self) -> None:
        self.outputs: dict[str, Any] = {}
        self.usage: dict[str, StepUsage] = {}
        self.errors: dict[str, str] = {}

    async def succeeded(self) -> dict[str, Any]:
        return dict(self.outputs)

    async def started(self, key: str) -> None:
        pass

    async def finished(self, key: str, output: Any, usage: StepUsage) -> None:
        self.outputs[key] = output
        self.usage[key] = usage

    async def failed(self, key: str, error: str, usage: StepUsage) -> None:
        self.errors[key] = error


class ListEventSink:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    async def emit(self, type: str, data: dict[str, Any]) -> None:
        self.events.append((type, data))


_current_usage: contextvars.ContextVar[StepUsage | None] = contextvars.ContextVar("step_usage", default=None)


def request_priority(job_priority: int | None, urgency: int = 0) -> int | None:
    """The server-side priority of one request (vLLM: lower is served first).

    Jobs keep their order (0 first .. 9 last); within a job's class, a request with more
    work waiting behind it (`urgency`, e.g. sections still to write) goes first, which
    shortens the tail of a batch of jobs. None when priority scheduling is off."""
    if job_priority is None:
        return None
    return job_priority * 100 + 99 - max(0, min(99, urgency))


class _RecordingClient:
    """Wraps the shared client: adds each call's usage to the running step, sets the sticky key."""

    def __init__(self, inner: LLMClient, sticky_key: str | None, priority: int | None):
        self._inner = inner
        self._sticky_key = sticky_key
        self._priority = priority

    @property
    def model_name(self) -> str:
        return self._inner.model_name

    @property
    def context_window(self) -> int:
        return self._inner.context_window

    def _options(self, options: GenOptions | None) -> GenOptions:
        options = options or GenOptions()
        if options.sticky_key is None:
            options.sticky_key = self._sticky_key
        if options.priority is None:
            options.priority = request_priority(self._priority)
        return options

    def _record(self, result: LLMResult) -> LLMResult:
        usage = _current_usage.get()
        if usage is not None:
            usage.add(result)
        return result

    async def chat(self, messages: list[Message], options: GenOptions | None = None) -> LLMResult:
        return self._record(await self._inner.chat(messages, self._options(options)))

    async def complete(self, prompt: str, options: GenOptions | None = None) -> LLMResult:
        return self._record(await self._inner.complete(prompt, self._options(options)))

    async def count_tokens(self, text: str) -> int:
        return await self._inner.count_tokens(text)

    async def aclose(self) -> None:  # the shared client outlives any one job
        pass


class JobContext:
    def __init__(
        self,
        llm: LLMClient,
        store: StepStore | None = None,
        events: EventSink | None = None,
        settings: Any = None,
        job_id: str = "",
        priority: int | None = None,
        is_cancelled: Callable[[], bool] | None = None,
        judge: LLMClient | None = None,
        load_document: Callable[[str], Awaitable[str]] | None = None,
        load_job_result: Callable[[str], Awaitable[dict[str, Any]]] | None = None,
        succeeded: dict[str, Any] | None = None,
    ):
        self.llm = _RecordingClient(llm, sticky_key=job_id or None, priority=priority)
        # The judge (S_q, BooookScore) may be a different model; None when not configured.
        self.judge = _RecordingClient(judge, sticky_key=job_id or None, priority=priority) if judge else None
        self._load_document = load_document
        self._load_job_result = load_job_result
        self.priority = priority  # None: the model server does not schedule by priority
        self.store = store or MemoryStepStore()
        self.events = events or ListEventSink()
        self.settings = settings
        self.job_id = job_id
        self._is_cancelled = is_cancelled or (lambda: False)
        self._done: dict[str, Any] | None = succeeded  # None: asked of the store on first use
        self._load_lock = asyncio.Lock()
        self.steps_run = 0  # steps actually executed (not replayed) in this run

    async def load_document(self, document_id: str) -> str:
        """Text of an uploaded document (the worker resolves it from the database)."""
        if self._load_document is None:
            raise LookupError("this context has no document store")
        return await self._load_document(document_id)

    async def load_job_result(self, job_id: str) -> dict[str, Any]:
        """Result of another finished job (e.g. the summary a score job judges)."""
        if self._load_job_result is None:
            raise LookupError("this context has no job store")
        return await self._load_job_result(job_id)

    def request_priority(self, urgency: int = 0) -> int | None:
        """Priority for a call with `urgency` units of this job's work queued behind it."""
        return request_priority(self.priority, urgency)

    def check_cancelled(self) -> None:
        if self._is_cancelled():
            raise JobCancelled(self.job_id)

    async def _succeeded(self) -> dict[str, Any]:
        async with self._load_lock:
            if self._done is None:
                self._done = await self.store.succeeded()
        return self._done

    async def step(self, key: str, fn: Callable[[], Awaitable[Any]]) -> Any:
        """Run `fn` once per job: a replayed job gets the stored output back."""
        done = await self._succeeded()
        if key in done:
            return done[key]
        self.check_cancelled()
        usage = StepUsage()
        token = _current_usage.set(usage)
        # The "running" record is written while the step works (it only feeds the timeline);
        # it is always in place before the step's outcome is written.
        started = asyncio.ensure_future(self.store.started(key))
        try:
            output = await fn()
        except BaseException as exc:
            await asyncio.shield(self._after(started, self.store.failed(key, f"{type(exc).__name__}: {exc}", usage)))
            raise
        finally:
            _current_usage.reset(token)
        await self._after(started, self.store.finished(key, output, usage))
        done[key] = output
        self.steps_run += 1
        return output

    @staticmethod
    async def _after(started: asyncio.Future, outcome: Awaitable[None]) -> None:
        await asyncio.gather(started, return_exceptions=True)
        await outcome

    def render(self, template: str, **variables: Any) -> str:
        """Render a prompt template and record its name and hash on the running step."""
        rendered = prompts.render(template, **variables)
        usage = _current_usage.get()
        if usage is not None:
            usage.template, usage.template_hash = template, rendered.template_hash
        return rendered.text

    async def progress(self, done: float, total: float, **detail: Any) -> None:
        await self.events.emit("progress", {"done": done, "total": total, **detail})

    async def log(self, message: str, **detail: Any) -> None:
        await self.events.emit("log", {"message": message, **detail})

