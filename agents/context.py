"""The job context agents run in: checkpointed steps, progress events, the LLM client, and
what a kind may need of the service (`JobServices`): documents, other jobs' results, child
jobs, a data directory, typed settings.

Agents never see the database, Celery or FastAPI. The worker hands them a `JobContext`
backed by the database; tests and notebooks use `MemoryStepStore` and `MemoryJobServices`.

`await ctx.step(key, fn)` is the one mechanism for resume, retries, progress and token
accounting: if step `key` already succeeded, its stored output comes back without
calling `fn`; otherwise `fn()` runs, and every LLM call made inside it (through
`ctx.llm`) is added to the step's usage record.
"""
from __future__ import annotations

import asyncio
import contextvars
import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable, Protocol

import prompts
from agents import fingerprints
from agents.llm.types import GenOptions, LLMClient, LLMResult, Message
from agents.settings import Settings
from agents.status import FINISHED_STATUSES

MAX_CHILDREN_POLL_S = 1.0  # the longest pause of wait_children while no child changes status


class JobCancelled(Exception):
    """Raised inside an agent when its job was cancelled; finished steps stay stored."""


class BudgetExceeded(Exception):
    """Raised before a model call that would pass the job's budget (`max_calls`,
    `max_tokens_total`): the job fails with this reason; finished steps stay stored, so a
    retry with a higher cap resumes where it stopped."""


@dataclass
class Budget:
    """A job's caps on model calls and tokens (None: unlimited) and its use so far.

    `calls` and `tokens` start at what the job's stored steps used (earlier runs) and grow
    with each finished call of this run; `in_flight` counts the calls under way, so calls made
    concurrently never pass `max_calls` together. Tokens are prompt plus completion tokens of
    finished calls: the token cap is checked before a call, so the last call may overshoot it
    by its own size."""

    max_calls: int | None = None
    max_tokens_total: int | None = None
    calls: int = 0
    tokens: int = 0
    in_flight: int = 0

    def __post_init__(self) -> None:
        self.max_calls = self.max_calls or None  # 0: unlimited
        self.max_tokens_total = self.max_tokens_total or None

    @property
    def limited(self) -> bool:
        return self.max_calls is not None or self.max_tokens_total is not None

    def reserve(self) -> None:
        """Take one call from the budget, or raise BudgetExceeded."""
        if self.max_calls is not None and self.calls + self.in_flight + 1 > self.max_calls:
            raise BudgetExceeded(
                f"the job's budget of {self.max_calls} model calls is spent ({self.calls + self.in_flight} used); "
                "raise max_calls to go on")
        if self.max_tokens_total is not None and self.tokens >= self.max_tokens_total:
            raise BudgetExceeded(
                f"the job's budget of {self.max_tokens_total} tokens is spent ({self.tokens} used); "
                "raise max_tokens_total to go on")
        self.in_flight += 1

    def settle(self, result: LLMResult | None) -> None:
        """A reserved call ended: with its result, or None when it raised (not counted)."""
        self.in_flight -= 1
        if result is not None:
            self.calls += 1
            self.tokens += result.prompt_tokens + result.completion_tokens


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
    # What produced the step, for its fingerprint: the source hash of every template rendered
    # and of each partial they use, the model of each client used, each call's sampling options.
    templates: dict[str, str] = field(default_factory=dict)
    models: dict[str, str] = field(default_factory=dict)
    sampling: list[dict[str, Any]] = field(default_factory=list)
    kind_version: int = 1
    # The origin of each template or partial that did not come from the bundled files
    # ("PROMPTS_DIR", "set:NAME"); recorded, not compared (the source hashes already are).
    origins: dict[str, str] = field(default_factory=dict)

    def fingerprint(self) -> dict[str, Any]:
        """What produced this step, and a hash of it: a retry compares them with the code's."""
        unique_sampling = sorted({json.dumps(s, sort_keys=True) for s in self.sampling})
        parts = {
            "templates": dict(sorted(self.templates.items())),
            "version": self.kind_version,
            "models": dict(sorted(self.models.items())),
            "sampling": [json.loads(s) for s in unique_sampling],
        }
        if self.origins:  # only overlaid prompts: a bundled-only step's fingerprint is as before
            parts["origins"] = dict(sorted(self.origins.items()))
        return fingerprints.with_hash(parts)

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


@dataclass(frozen=True)
class ChildJob:
    """A child job as its parent sees it."""

    id: str
    status: str
    params: dict[str, Any]
    result: dict[str, Any] | None
    created_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None  # why it failed, when it did


class JobServices(Protocol):
    """What the service offers a running job besides its model and its steps."""

    async def load_document(self, document_id: str) -> str: ...

    async def load_job_result(self, job_id: str) -> dict[str, Any]: ...

    async def spawn_children(self, parent_id: str, kind: str, params_list: list[dict[str, Any]],
                             priority: int, start: int = 0) -> list[str]:
        """Create (idempotently per index: child `start + i` for params_list[i]) and queue child
        jobs; returns their ids in order. A parent that spawns in batches passes each batch's
        first index as `start`."""

    async def children_status(self, parent_id: str) -> dict[str, int]: ...

    async def run_queued_child(self, parent_id: str) -> bool:
        """Claim one queued child of `parent_id` and run it to its end here; False when there
        was none to claim."""
        ...

    async def children(self, parent_id: str, *, finished_only: bool = False,
                       exclude: Iterable[str] = ()) -> list[ChildJob]:
        """Children in creation order (finished ones only, if asked), but those in `exclude`."""


class MemoryJobServices:
    """Documents and job results held in memory, for tests and notebooks. Child jobs are
    not run here: a kind that spawns them needs the service."""

    def __init__(self, documents: dict[str, str] | None = None, results: dict[str, dict[str, Any]] | None = None):
        self.documents = documents or {}
        self.results = results or {}

    async def load_document(self, document_id: str) -> str:
        if document_id not in self.documents:
            raise LookupError(f"document {document_id} not found")
        return self.documents[document_id]

    async def load_job_result(self, job_id: str) -> dict[str, Any]:
        if job_id not in self.results:
            raise LookupError(f"job {job_id} not found")
        return self.results[job_id]

    async def spawn_children(self, parent_id: str, kind: str, params_list: list[dict[str, Any]],
                             priority: int, start: int = 0) -> list[str]:
        raise LookupError("this context cannot run child jobs")

    async def children_status(self, parent_id: str) -> dict[str, int]:
        return {}

    async def run_queued_child(self, parent_id: str) -> bool:
        return False

    async def children(self, parent_id: str, *, finished_only: bool = False,
                       exclude: Iterable[str] = ()) -> list[ChildJob]:
        return []


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


def current_step_usage() -> StepUsage | None:
    """The usage of the step running in this task so far (None outside a step)."""
    return _current_usage.get()


def request_priority(job_priority: int | None, urgency: int = 0) -> int | None:
    """The server-side priority of one request (vLLM: lower is served first).

    Jobs keep their order (0 first .. 9 last); within a job's class, a request with more
    work waiting behind it (`urgency`, e.g. sections still to write) goes first, which
    shortens the tail of a batch of jobs. None when priority scheduling is off."""
    if job_priority is None:
        return None
    return job_priority * 100 + 99 - max(0, min(99, urgency))


def sampling_of(options: GenOptions) -> dict[str, Any]:
    """The options of a call that shape its text (for the step's fingerprint)."""
    values = {
        "temperature": options.temperature, "top_p": options.top_p, "top_k": options.top_k,
        "max_tokens": options.max_tokens, "min_tokens": options.min_tokens, "stop": options.stop,
        "seed": options.seed, "repetition_penalty": options.repetition_penalty, "model": options.model,
        "json_schema": hashlib.sha256(json.dumps(options.json_schema, sort_keys=True).encode()).hexdigest()[:12]
        if options.json_schema is not None else None,
        "extra_body": options.extra_body,
    }
    return {k: v for k, v in values.items() if v is not None}


class _RecordingClient:
    """Wraps the shared client: adds each call's usage to the running step, sets the sticky key."""

    def __init__(self, inner: LLMClient, sticky_key: str | None, priority: int | None, role: str = "llm",
                 budget: Budget | None = None):
        self._inner = inner
        self._sticky_key = sticky_key
        self._priority = priority
        self._role = role  # "llm" or "judge": whose model a step's fingerprint records
        self._budget = budget or Budget()  # shared by the job's clients (llm and judge)

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

    def _record(self, result: LLMResult, options: GenOptions) -> LLMResult:
        usage = _current_usage.get()
        if usage is not None:
            usage.add(result)
            if options.model is None:  # the client's own model; a model named by the job's params is in `sampling`
                usage.models[self._role] = self._inner.model_name or result.model
            usage.sampling.append(sampling_of(options))
        return result

    async def _call(self, call: Callable[[], Awaitable[LLMResult]], options: GenOptions) -> LLMResult:
        self._budget.reserve()  # BudgetExceeded before the call, never after it was paid for
        result = None
        try:
            result = await call()
        finally:
            self._budget.settle(result)
        return self._record(result, options)

    async def chat(self, messages: list[Message], options: GenOptions | None = None) -> LLMResult:
        options = self._options(options)
        return await self._call(lambda: self._inner.chat(messages, options), options)

    async def complete(self, prompt: str, options: GenOptions | None = None) -> LLMResult:
        options = self._options(options)
        return await self._call(lambda: self._inner.complete(prompt, options), options)

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
        settings: Settings | None = None,
        job_id: str = "",
        priority: int | None = None,
        is_cancelled: Callable[[], bool] | None = None,
        judge: LLMClient | None = None,
        services: JobServices | None = None,
        succeeded: dict[str, Any] | None = None,
        kind_version: int = 1,
        prompt_set: str | None = None,
        budget: Budget | None = None,
    ):
        # The job's caps on model calls and tokens, shared by all its clients (None: unlimited).
        self.budget = budget or Budget()
        self.llm = _RecordingClient(llm, sticky_key=job_id or None, priority=priority, budget=self.budget)
        # The judge (S_q, BooookScore) may be a different model; None when not configured.
        self.judge = _RecordingClient(judge, sticky_key=job_id or None, priority=priority, role="judge",
                                      budget=self.budget) if judge else None
        self.kind_version = kind_version  # part of every step's fingerprint
        self.services: JobServices = services or MemoryJobServices()
        self.priority = priority  # None: the model server does not schedule by priority
        self.store = store or MemoryStepStore()
        self.events = events or ListEventSink()
        self.settings = settings or Settings()
        self.job_id = job_id
        self._is_cancelled = is_cancelled or (lambda: False)
        self._done: dict[str, Any] | None = succeeded  # None: asked of the store on first use
        self._load_lock = asyncio.Lock()
        self.steps_run = 0  # steps actually executed (not replayed) in this run
        self.prompt_set = prompt_set  # the job's named prompt set (an overlay), if any
        # Where templates come from: the set, then PROMPTS_DIR, then the bundled files
        # (prompts.UnknownPromptSet when the set is not installed).
        self.prompt_overlay = self.settings.prompt_overlay(prompt_set)

    @property
    def data_dir(self) -> Path:
        """Where a job writes files (exports): the service's data directory."""
        return Path(self.settings.longform_data_dir)

    async def load_document(self, document_id: str) -> str:
        """Text of an uploaded document."""
        return await self.services.load_document(document_id)

    async def load_job_result(self, job_id: str) -> dict[str, Any]:
        """Result of another finished job (e.g. the summary a score job judges)."""
        return await self.services.load_job_result(job_id)

    async def spawn_children(self, kind: str, params_list: list[dict[str, Any]], priority: int,
                             start: int = 0) -> list[str]:
        """Child jobs of this job, created once however often this runs (call it in a step).
        Spawning in batches: each batch passes the number of children spawned before it as
        `start` (the children's identity is their index)."""
        if start:
            return await self.services.spawn_children(self.job_id, kind, params_list, priority, start=start)
        return await self.services.spawn_children(self.job_id, kind, params_list, priority)

    async def children(self, *, finished_only: bool = False, exclude: Iterable[str] = ()) -> list[ChildJob]:
        return await self.services.children(self.job_id, finished_only=finished_only, exclude=exclude)

    async def wait_children(
        self, poll_s: float = 0.1, on_finished: Callable[[], Awaitable[None]] | None = None
    ) -> dict[str, int]:
        """Wait until every child has finished, reporting progress; `on_finished` runs
        whenever more children have finished since the last poll (work on them early).
        Returns the count of children by status.

        Progress is reported when the counts change, and the poll backs off (up to
        MAX_CHILDREN_POLL_S) while they do not: a parent waiting on queued children used to
        write a progress event every poll_s, and 128 such parents made 1,280 commits a second
        (bench/load.py)."""
        handled = 0
        last_counts: dict[str, int] | None = None
        pause_s = poll_s
        while True:
            counts = await self.services.children_status(self.job_id)
            finished = sum(counts.get(s, 0) for s in FINISHED_STATUSES)
            total = sum(counts.values())
            if counts != last_counts:
                await self.progress(finished, total, children=counts)
                last_counts, pause_s = counts, poll_s
            else:
                pause_s = min(pause_s * 2, max(poll_s, MAX_CHILDREN_POLL_S))
            if finished >= total:
                return counts
            self.check_cancelled()
            pause = self._help_or_pause(counts.get("queued", 0), pause_s)
            if on_finished is not None and finished > handled:
                await asyncio.gather(on_finished(), pause)
                handled = finished
            else:
                await pause

    async def _help_or_pause(self, queued: int, pause_s: float) -> None:
        """While children are queued, run one of them in this job's worker slot; else pause.
        A waiting parent holds a slot: were every slot held by one, their children would
        never run (bench/load.py found it). Services without a runner (test doubles) wait."""
        run_child = getattr(self.services, "run_queued_child", None)
        if queued and run_child is not None and await run_child(self.job_id):
            return
        await asyncio.sleep(pause_s)

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
        usage = StepUsage(kind_version=self.kind_version)
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
        # Shielded: a cancellation arriving now must not lose a finished step's output (a resumed
        # job would call the model for it again).
        await asyncio.shield(self._after(started, self.store.finished(key, output, usage)))
        done[key] = output
        self.steps_run += 1
        return output

    @staticmethod
    async def _after(started: asyncio.Future, outcome: Awaitable[None]) -> None:
        await asyncio.gather(started, return_exceptions=True)
        await outcome

    def render(self, template: str, **variables: Any) -> str:
        """Render a prompt template and record its name and hash on the running step."""
        return self._record_render(prompts.render(template, overlay=self.prompt_overlay, **variables))

    def render_text(self, template: str, fill: Callable[[str], str]) -> str:
        """Render a reference implementation's plain-text prompt file (prompts.render_text)."""
        return self._record_render(prompts.render_text(template, fill, overlay=self.prompt_overlay))

    def _record_render(self, rendered: "prompts.Rendered") -> str:
        template = rendered.template
        usage = _current_usage.get()
        if usage is not None:
            usage.template, usage.template_hash = template, rendered.template_hash
            usage.templates.update(rendered.sources)
            usage.origins.update({n: o for n, o in rendered.origins.items() if o != prompts.BUNDLED})
        return rendered.text

    async def progress(self, done: float, total: float, **detail: Any) -> None:
        await self.events.emit("progress", {"done": done, "total": total, **detail})

    async def log(self, message: str, **detail: Any) -> None:
        await self.events.emit("log", {"message": message, **detail})

