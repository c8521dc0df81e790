"""OpenAI-compatible backend over a pool of endpoints (vLLM replicas, llama.cpp servers, any API).

Requests go through the official `openai.AsyncOpenAI` client (a few per base URL, each with
a small connection pool, to keep per-request CPU low), with the client's own retries off:
the pool retries itself so it can fail over. Per call:

- Routing: the healthy endpoint with the fewest outstanding requests that is under its
  in-flight limit. With a sticky key (a job id) the endpoint is chosen by rendezvous hashing
  over the healthy endpoints, so a job's prefix-sharing requests land on one replica (and
  the key travels as `X-Session-ID`, the vllm-router convention). When every candidate is
  full the call queues; a release hands the slot straight to the next queued call, so the
  limit is never exceeded.
- Errors map to the typed errors of `types.py`. Timeouts, connection errors, 429 and 5xx
  are retried with exponential backoff and full jitter (429 honours Retry-After, bounded),
  preferring another endpoint; other 4xx raise `LLMBadRequest` at once.
- Connection errors and timeouts count towards marking an endpoint down; a background
  probe (GET <root>/health, else <base>/models) brings it back. When every endpoint is down
  a call waits for a probe to succeed, each wait costing one retry, then raises
  `LLMUnavailable`.
- Context window: each endpoint's `max_model_len` comes from its /v1/models (the entry of
  the configured model, else the first), whatever model is configured; `context_window` is
  the smallest reported (a request may land on any endpoint), and the `context_window`
  argument (LLM_CONTEXT_WINDOW) only the fallback for servers that report none. It is
  learned by `ensure_ready()`, which `check()` and the first chat/complete/count_tokens call
  run, so a caller that awaits any of them (a worker at start-up) reads the server's figure;
  an endpoint that did not answer then is asked before its first request.

`LLMResult.latency_s` is the whole call as the caller saw it (queueing and retries included);
`attempts` counts the tries.

Cancelling the calling task cancels the HTTP request, which closes the connection; vLLM
aborts a request whose client disconnected, so no GPU time is wasted on it.
"""
from __future__ import annotations

import asyncio
import hashlib
import heapq
import itertools
import logging
import math
import random
import time
from dataclasses import dataclass
from typing import Any

import httpx
import openai

from agents import text as textutil
from agents.llm.metrics import EndpointMetrics
from agents.llm.types import (
    GenOptions,
    LLMBadRequest,
    LLMConnectionError,
    LLMError,
    LLMRateLimited,
    LLMResult,
    LLMServerError,
    LLMTimeout,
    LLMUnavailable,
    Message,
)

log = logging.getLogger(__name__)
# httpx logs every request at INFO, which workers log by default: a line and CPU per model
# call. The pool logs retries, failovers and errors itself.
logging.getLogger("httpx").setLevel(logging.WARNING)

# What a plain httpx call to a model server can raise when the server fails or dies: httpx's
# errors, and what anyio raises under uvloop when a kept-alive connection's peer closed it
# ("'NoneType' object has no attribute 'getpeername'", uvloop issue 560). Probes and /tokenize
# use httpx directly; calls go through the openai client, whose untyped failures
# `_transport_failure` maps.
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (httpx.HTTPError, OSError, AttributeError)

_CONNECT_TIMEOUT_S = 10.0
_CONNECTIONS_PER_CLIENT = 16
_PROBE_TIMEOUT_S = 5.0
_MODELS_TIMEOUT_S = 10.0
_MODELS_RETRY_S = 30.0  # an endpoint whose /v1/models failed is asked again after this long


def _root_url(base_url: str) -> str:
    """Server root of an OpenAI base URL (vLLM serves /health and /tokenize there)."""
    return base_url[: -len("/v1")] if base_url.endswith("/v1") else base_url


def _connection_limits(connections: int) -> Any:
    """Keep every connection alive (the client's default keeps 100 and would reconnect above it)."""
    limits_cls = type(openai.DEFAULT_CONNECTION_LIMITS)  # httpx's Limits, whichever httpx openai uses
    return limits_cls(max_connections=connections + 2, max_keepalive_connections=connections + 2)


def _rendezvous_score(key: str, endpoint: str) -> int:
    digest = hashlib.blake2b(f"{key}\x00{endpoint}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


class _Endpoint:
    def __init__(self, base_url: str, api_key: str, timeout_s: float, max_inflight: int):
        self.base_url = base_url.rstrip("/")
        self.root = _root_url(self.base_url)
        # Several clients ("shards") of a few connections each: the HTTP connection pool scans
        # all its connections on every request, so one pool of hundreds costs milliseconds of
        # CPU per call; shards keep that scan short.
        shards = max(1, math.ceil(max_inflight / _CONNECTIONS_PER_CLIENT))
        per_shard = math.ceil(max_inflight / shards)
        self.clients = [
            openai.AsyncOpenAI(
                base_url=self.base_url,
                api_key=api_key,
                max_retries=0,  # the pool retries, with failover
                timeout=openai.Timeout(timeout_s, connect=min(_CONNECT_TIMEOUT_S, timeout_s)),
                http_client=openai.DefaultAsyncHttpxClient(limits=_connection_limits(per_shard)),
            )
            for _ in range(shards)
        ]
        self.shard_inflight = [0] * shards
        self.inflight = 0
        self.up = True
        self.consecutive_failures = 0
        self.last_error = ""
        self.served = 0
        self.tokenize_supported: bool | None = None  # unknown until tried
        # From /v1/models: asked (answered, even without a listing), the model's limit if
        # reported, and when to ask again after a failure.
        self.models_checked = False
        self.max_model_len: int | None = None
        self.models_retry_at = 0.0
        self.metrics = EndpointMetrics(self.base_url)

    def least_busy_shard(self) -> int:
        counts = self.shard_inflight
        return counts.index(min(counts))


@dataclass
class _Waiter:
    future: asyncio.Future
    sticky_key: str | None
    avoid: frozenset[str]
    waiting_for_probe: bool  # True: every endpoint was down; gives up after a timer


NO_PRIORITY = 1 << 30  # calls without a priority queue behind prioritized ones, in arrival order


_FULL = object()  # sentinel: endpoints are up but at their in-flight limit
# count_tokens: texts of at least this many local tokens calibrate the server/local ratio.
MIN_CALIBRATION_TOKENS = 64
CALIBRATION_SAMPLES = 8
RECHECK_EVERY = 64
SMALL_TEXT_SLACK_TOKENS = 4


class OpenAIPool:
    """LLMClient over one or more OpenAI-compatible base URLs. Use within one event loop."""

    def __init__(
        self,
        endpoints: list[str],
        api_key: str = "EMPTY",
        model: str = "",
        max_inflight: int = 64,
        timeout_s: float = 600.0,
        max_retries: int = 5,
        context_window: int = 8192,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 20.0,
        probe_interval_s: float = 2.0,
        down_after_failures: int = 3,
    ):
        if not endpoints:
            raise ValueError("OpenAIPool needs at least one endpoint URL")
        if max_inflight < 1:
            raise ValueError("max_inflight must be at least 1")
        self._endpoints = [_Endpoint(u, api_key or "EMPTY", timeout_s, max_inflight) for u in endpoints]
        self._api_key = api_key or "EMPTY"
        self._model = model
        self._fallback_context_window = context_window  # for servers that report no max_model_len
        self._ready = False  # ensure_ready() has asked every endpoint once
        self.max_inflight = max_inflight
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.probe_interval_s = probe_interval_s
        self.down_after_failures = down_after_failures
        # Calls waiting for a slot: a heap by (priority, arrival), so a request's priority is
        # honoured here as well as by the server (which only sees what we send it).
        self._waiters: list[tuple[int, int, _Waiter]] = []
        self._arrivals = itertools.count()
        self._rr = 0  # rotates tie-breaking between equally loaded endpoints
        self._models_lock: asyncio.Lock | None = None
        self._probe_task: asyncio.Task | None = None
        self._aux: httpx.AsyncClient | None = None  # probes and /tokenize
        # Token-count calibration against the server's tokenizer (see count_tokens).
        self._token_ratio: float | None = None
        self._calibrations_started = 0  # successful or in flight
        self._calibrations_inflight = 0
        self._calibration_done = asyncio.Event()  # set (and replaced) as each one ends
        self._token_counts = 0
        self._closed = False

    # ----- LLMClient -----------------------------------------------------------------

    @property
    def model_name(self) -> str:
        return self._model

    @property
    def context_window(self) -> int:
        """The smallest max_model_len the endpoints report, else the configured fallback."""
        reported = [ep.max_model_len for ep in self._endpoints if ep.max_model_len]
        return min(reported) if reported else self._fallback_context_window

    async def ensure_ready(self) -> None:
        """Learn the model name (when none is configured) and every endpoint's max_model_len
        from /v1/models, once; later calls return at once. Never raises: an endpoint that does
        not answer now is asked again before its first request."""
        if self._ready:
            return
        async with self._lock():
            if self._ready:
                return
            await asyncio.gather(*(self._learn_limits(ep) for ep in self._endpoints if not ep.models_checked))
            self._ready = True

    @property
    def endpoints(self) -> list[str]:
        return [e.base_url for e in self._endpoints]

    async def chat(self, messages: list[Message], options: GenOptions | None = None) -> LLMResult:
        return await self._call("chat", messages, options or GenOptions())

    async def complete(self, prompt: str, options: GenOptions | None = None) -> LLMResult:
        return await self._call("completion", prompt, options or GenOptions())

    async def count_tokens(self, text: str) -> int:
        """Tokens of `text` for budgets, as an upper estimate in the model's tokenizer.

        With a server `/tokenize` (vLLM, llama.cpp), the first CALIBRATION_SAMPLES counts of
        sizeable texts come from it, and so does every RECHECK_EVERY-th after that; the rest
        are the local cl100k_base count scaled by the largest server/local ratio seen (plus a
        few tokens), so a budget check costs no round trip. Short texts are always estimated
        that way. Without `/tokenize` it is the plain cl100k count (an approximation: budgets
        built on it keep a margin)."""
        if not self._ready:
            await self.ensure_ready()  # budgets built on this count read context_window next
        if not text:
            return 0
        if len(text) > 200_000:  # a whole book: keep the event loop responsive
            local = await asyncio.to_thread(textutil.count_tokens, text)
        else:
            local = textutil.count_tokens(text)
        endpoint = next((ep for ep in self._endpoints if ep.up and ep.tokenize_supported is not False), None)
        if endpoint is None:
            return local
        if local < MIN_CALIBRATION_TOKENS:  # short: estimated, the slack covers the difference
            return local if self._token_ratio is None else math.ceil(local * self._token_ratio) + SMALL_TEXT_SLACK_TOKENS
        self._token_counts += 1
        if self._calibrations_started < CALIBRATION_SAMPLES or self._token_counts % RECHECK_EVERY == 0:
            exact = await self._calibrate(endpoint, text, local)
            if exact is not None:
                return exact
        else:
            # Many jobs start at once: they wait for the first samples rather than each
            # asking the server (which would be one round trip per job again).
            while self._token_ratio is None and self._calibrations_inflight:
                await self._calibration_done.wait()
        if self._token_ratio is None:
            return local
        return math.ceil(local * self._token_ratio) + SMALL_TEXT_SLACK_TOKENS

    async def _calibrate(self, endpoint: _Endpoint, text: str, local: int) -> int | None:
        """The server's count of `text`, folded into the server/local ratio."""
        self._calibrations_started += 1
        self._calibrations_inflight += 1
        exact = None
        try:
            exact = await self._server_token_count(endpoint, text)
            if exact is not None:
                self._token_ratio = max(self._token_ratio or 0.0, exact / local)
            return exact
        finally:
            if exact is None:
                self._calibrations_started -= 1  # a failed sample does not count: a later text retries
            self._calibrations_inflight -= 1
            done, self._calibration_done = self._calibration_done, asyncio.Event()
            done.set()

    async def aclose(self) -> None:
        self._closed = True
        if self._probe_task is not None:
            self._probe_task.cancel()
            await asyncio.gather(self._probe_task, return_exceptions=True)
            self._probe_task = None
        for _, _, waiter in self._waiters:
            if not waiter.future.done():
                waiter.future.set_result(None)
        self._waiters.clear()
        for ep in self._endpoints:
            for client in ep.clients:
                await client.close()
        if self._aux is not None:
            await self._aux.aclose()
            self._aux = None

    # ----- health --------------------------------------------------------------------

    def health(self) -> list[dict[str, Any]]:
        return [
            {
                "endpoint": ep.base_url,
                "up": ep.up,
                "inflight": ep.inflight,
                "max_inflight": self.max_inflight,
                "consecutive_failures": ep.consecutive_failures,
                "last_error": ep.last_error,
                "served": ep.served,
            }
            for ep in self._endpoints
        ]

    async def check(self) -> list[dict[str, Any]]:
        """Probe every endpoint now (readiness): updates up/down state, learns the model name
        and each endpoint's context window if not known yet, and returns health()."""
        results = await asyncio.gather(*(self._probe(ep) for ep in self._endpoints))
        for ep, ok in zip(self._endpoints, results):
            if ok:
                self._mark_up(ep)
            else:
                self._mark_down(ep, ep.last_error or "probe failed")
        await self.ensure_ready()
        await asyncio.gather(*(self._learn_once(ep) for ep in self._endpoints if ep.up and not ep.models_checked))
        return self.health()

    # ----- the call loop -------------------------------------------------------------

    async def _call(self, kind: str, payload: Any, options: GenOptions) -> LLMResult:
        if self._closed:
            raise LLMUnavailable("the client is closed")
        started = time.perf_counter()
        if not self._ready:
            await self.ensure_ready()
        attempt = 0  # failed attempts so far (each retry or fruitless wait for a probe costs one)
        avoid: set[str] = set()
        last_error: LLMError | None = None
        while True:
            ep = await self._acquire(options.sticky_key, frozenset(avoid), self._backoff_cap(attempt + 1), options.priority)
            if ep is None:  # every endpoint down and no probe brought one back in time
                attempt += 1
                if attempt > self.max_retries:
                    raise LLMUnavailable(
                        f"no endpoint up after {attempt} waits; last error: {last_error or 'endpoints down'}",
                        endpoint=last_error.endpoint if last_error else "",
                    ) from last_error
                continue
            try:
                result = await self._attempt(ep, kind, payload, options)
            except LLMError as err:
                self._release(ep)
                ep.metrics.attempt_failed(err)
                ep.last_error = f"{type(err).__name__}: {err}"
                last_error = err
                if not err.retryable:
                    ep.metrics.call_failed(err)
                    raise
                if isinstance(err, (LLMConnectionError, LLMTimeout)):
                    self._note_failure(ep)
                attempt += 1
                if attempt > self.max_retries:
                    ep.metrics.call_failed(err)
                    if not any(e.up for e in self._endpoints):
                        raise LLMUnavailable(f"all endpoints down; last error: {err}", endpoint=ep.base_url) from err
                    raise
                avoid.add(ep.base_url)
                delay = self._retry_delay(attempt, err)
                if delay > 0 and not self._other_endpoint_free(avoid):
                    await asyncio.sleep(delay)
                continue
            except BaseException:  # cancelled: the HTTP request is closed; free the slot
                self._release(ep)
                raise
            self._release(ep)
            ep.consecutive_failures = 0
            if not ep.up:
                self._mark_up(ep)  # it answered: evidently alive
            ep.served += 1
            result.attempts = attempt + 1
            result.latency_s = time.perf_counter() - started
            ep.metrics.success(result.latency_s, result.prompt_tokens, result.completion_tokens, result.cached_tokens)
            return result

    def _backoff_cap(self, attempt: int) -> float:
        return min(self.backoff_max_s, self.backoff_base_s * (2 ** max(0, attempt - 1)))

    def _retry_delay(self, attempt: int, err: LLMError) -> float:
        retry_after = getattr(err, "retry_after", None)
        if retry_after is not None:
            return min(max(0.0, retry_after), self.backoff_max_s)
        return random.uniform(0, self._backoff_cap(attempt))  # full jitter

    def _other_endpoint_free(self, avoid: set[str]) -> bool:
        """A healthy endpoint we have not just failed on has room: fail over without waiting."""
        return any(e.up and e.base_url not in avoid and e.inflight < self.max_inflight for e in self._endpoints)

    # ----- routing -------------------------------------------------------------------

    def _pick(self, sticky_key: str | None, avoid: frozenset[str]) -> Any:
        """An endpoint with room, _FULL when the candidates are all busy, None when all are down."""
        healthy = [e for e in self._endpoints if e.up]
        if not healthy:
            return None
        if avoid:
            healthy = [e for e in healthy if e.base_url not in avoid] or healthy
        if sticky_key:
            target = max(healthy, key=lambda e: _rendezvous_score(sticky_key, e.base_url))
            return target if target.inflight < self.max_inflight else _FULL
        n = len(healthy)
        best = None
        start = self._rr % n
        for i in range(n):
            e = healthy[(start + i) % n]
            if e.inflight < self.max_inflight and (best is None or e.inflight < best.inflight):
                best = e
        if best is None:
            return _FULL
        self._rr += 1
        return best

    def _take(self, ep: _Endpoint) -> _Endpoint:
        ep.inflight += 1
        ep.metrics.inflight.set(ep.inflight)
        return ep

    async def _acquire(
        self, sticky_key: str | None, avoid: frozenset[str], probe_wait_s: float, priority: int | None = None
    ) -> _Endpoint | None:
        choice = self._pick(sticky_key, avoid)
        if isinstance(choice, _Endpoint) and not self._waiters:
            return self._take(choice)
        loop = asyncio.get_running_loop()
        waiter = _Waiter(loop.create_future(), sticky_key, avoid, waiting_for_probe=choice is None)
        order = NO_PRIORITY if priority is None else priority
        heapq.heappush(self._waiters, (order, next(self._arrivals), waiter))
        if isinstance(choice, _Endpoint):  # a slot is free but others queued first: serve in order
            self._dispatch()
        timer = None
        if waiter.waiting_for_probe:
            self._ensure_probe()
            timer = loop.call_later(probe_wait_s, _resolve, waiter.future, None)
        try:
            return await waiter.future
        except asyncio.CancelledError:
            # The slot may have been handed over just before the cancellation landed.
            if waiter.future.done() and not waiter.future.cancelled() and waiter.future.result() is not None:
                self._release(waiter.future.result())
            raise
        finally:
            if timer is not None:
                timer.cancel()

    def _release(self, ep: _Endpoint) -> None:
        ep.inflight -= 1
        ep.metrics.inflight.set(ep.inflight)
        if self._waiters:
            self._dispatch()

    def _dispatch(self) -> None:
        """Hand free slots to queued calls, by priority then age (synchronous: no slot is ever lost)."""
        any_up = any(e.up for e in self._endpoints)
        kept: list[tuple[int, int, _Waiter]] = []
        while self._waiters:
            entry = heapq.heappop(self._waiters)
            waiter = entry[2]
            if waiter.future.done():
                continue
            if not any_up:
                if waiter.waiting_for_probe:
                    kept.append(entry)
                else:  # it was queued for a full endpoint that has since died: let it retry
                    waiter.future.set_result(None)
                continue
            choice = self._pick(waiter.sticky_key, waiter.avoid)
            if isinstance(choice, _Endpoint):
                waiter.future.set_result(self._take(choice))
                continue
            kept.append(entry)
            if not any(e.up and e.inflight < self.max_inflight for e in self._endpoints):
                break  # no room anywhere: the rest keep waiting, in order
        for entry in kept:
            heapq.heappush(self._waiters, entry)

    # ----- health state --------------------------------------------------------------

    def _note_failure(self, ep: _Endpoint) -> None:
        ep.consecutive_failures += 1
        if ep.up and ep.consecutive_failures >= self.down_after_failures:
            self._mark_down(ep, ep.last_error)

    def _mark_down(self, ep: _Endpoint, reason: str) -> None:
        if ep.up:
            log.warning("LLM endpoint %s marked down: %s", ep.base_url, reason)
        ep.up = False
        ep.metrics.up.set(0)
        self._ensure_probe()
        if self._waiters:
            self._dispatch()

    def _mark_up(self, ep: _Endpoint) -> None:
        if not ep.up:
            log.info("LLM endpoint %s is back up", ep.base_url)
        ep.up = True
        ep.consecutive_failures = 0
        ep.metrics.up.set(1)
        if self._waiters:
            self._dispatch()

    def _ensure_probe(self) -> None:
        if self._closed or (self._probe_task is not None and not self._probe_task.done()):
            return
        self._probe_task = asyncio.get_running_loop().create_task(self._probe_loop())

    async def _probe_loop(self) -> None:
        while any(not e.up for e in self._endpoints) and not self._closed:
            await asyncio.sleep(self.probe_interval_s)
            down = [e for e in self._endpoints if not e.up]
            results = await asyncio.gather(*(self._probe(e) for e in down))
            for ep, ok in zip(down, results):
                if ok:
                    self._mark_up(ep)

    def _aux_client(self) -> httpx.AsyncClient:
        if self._aux is None:
            self._aux = httpx.AsyncClient(
                headers={"Authorization": f"Bearer {self._api_key}"},
                timeout=httpx.Timeout(30.0, connect=_PROBE_TIMEOUT_S),
            )
        return self._aux

    async def _probe(self, ep: _Endpoint) -> bool:
        client = self._aux_client()
        try:
            resp = await client.get(f"{ep.root}/health", timeout=_PROBE_TIMEOUT_S)
            if resp.status_code == 200:
                return True
            # No /health (a hosted API): a model listing shows the server is answering.
            resp = await client.get(f"{ep.base_url}/models", timeout=_PROBE_TIMEOUT_S)
            if resp.status_code == 200:
                return True
            ep.last_error = f"probe: HTTP {resp.status_code}"
        except TRANSPORT_ERRORS as exc:
            ep.last_error = f"probe: {type(exc).__name__}: {exc}"
        return False

    # ----- one HTTP attempt ----------------------------------------------------------

    async def _attempt(self, ep: _Endpoint, kind: str, payload: Any, options: GenOptions) -> LLMResult:
        if not ep.models_checked:  # it did not answer /v1/models before: ask before using it
            await self._learn_once(ep, required=not (options.model or self._model))
        model = options.model or self._model
        if not model:
            raise LLMBadRequest("the server lists no models; set LLM_MODEL", endpoint=ep.base_url)
        body, request_options = _request(kind, payload, model, options)
        shard = ep.least_busy_shard()
        ep.shard_inflight[shard] += 1
        try:
            # The client's generic post: its transport, auth, headers and typed errors, without
            # re-validating our own request body or building response models (CPU per call).
            data = await ep.clients[shard].post(
                "/chat/completions" if kind == "chat" else "/completions",
                cast_to=object,
                body=body,
                options=request_options,
            )
        except openai.APIError as exc:
            raise _map_error(exc, ep.base_url) from exc
        except Exception as exc:  # the client's transport failed outside its typed errors
            raise _transport_failure(exc, ep.base_url) from exc
        finally:
            ep.shard_inflight[shard] -= 1
        return _to_result(data, kind, ep.base_url, model)

    def _lock(self) -> asyncio.Lock:
        if self._models_lock is None:
            self._models_lock = asyncio.Lock()
        return self._models_lock

    async def _learn_once(self, ep: _Endpoint, required: bool = False) -> None:
        """_learn_limits for one endpoint, one caller at a time. After a timeout or server error
        the endpoint is asked again only once _MODELS_RETRY_S have passed, unless the answer is
        `required` (a server that answers calls but not /models costs no request per call)."""
        async with self._lock():
            if ep.models_checked or (not required and time.monotonic() < ep.models_retry_at):
                return
            await self._learn_limits(ep, required)

    async def _learn_limits(self, ep: _Endpoint, required: bool = False) -> None:
        """Ask `ep`'s /v1/models once it answers. A failure is logged and left for a later
        try, or raised when `required` (no model name is known without it)."""
        try:
            await self._read_models(ep)
        except LLMError as err:
            if not isinstance(err, LLMConnectionError):  # refused is cheap to ask again; a slow server is not
                ep.models_retry_at = time.monotonic() + _MODELS_RETRY_S
            ep.last_error = f"{type(err).__name__}: {err}"
            log.info("LLM endpoint %s: could not read /models: %s", ep.base_url, err)
            if required:
                raise

    async def _read_models(self, ep: _Endpoint) -> None:
        """The model name (when none is configured) and `ep.max_model_len`, from the listing's
        entry for the model (else its first entry). A 4xx answer counts as asked: the server
        has no listing, and the fallback window applies."""
        if ep.models_checked:
            return
        try:
            page = await ep.clients[0].models.list(timeout=_MODELS_TIMEOUT_S)
        except openai.APIError as exc:
            err = _map_error(exc, ep.base_url)
            if type(err) is not LLMBadRequest:
                raise err from exc
            page = None
        except Exception as exc:
            raise _transport_failure(exc, ep.base_url) from exc
        ep.models_checked = True
        cards = [(c.id, getattr(c, "max_model_len", None)) for c in (page.data if page else []) if c.id]
        if not cards:
            return
        if not self._model:
            self._model = cards[0][0]
        max_len = next((n for model, n in cards if model == self._model), cards[0][1])
        if isinstance(max_len, int) and not isinstance(max_len, bool) and max_len > 0:
            ep.max_model_len = max_len

    async def _server_token_count(self, ep: _Endpoint, text: str) -> int | None:
        """Token count from the server's /tokenize: vLLM's shape, then llama.cpp's."""
        client = self._aux_client()
        vllm_body: dict[str, Any] = {"prompt": text, "add_special_tokens": False}
        if self._model:
            vllm_body["model"] = self._model
        try:
            resp = await client.post(f"{ep.root}/tokenize", json=vllm_body)
            if resp.status_code == 200 and isinstance(resp.json().get("count"), int):
                ep.tokenize_supported = True
                return resp.json()["count"]
            resp = await client.post(f"{ep.root}/tokenize", json={"content": text})
            tokens = resp.json().get("tokens") if resp.status_code == 200 else None
            if isinstance(tokens, list) and (tokens or not text):
                ep.tokenize_supported = True
                return len(tokens)
        except (*TRANSPORT_ERRORS, ValueError):
            return None  # transient: try again next time
        ep.tokenize_supported = False
        return None


def _resolve(future: asyncio.Future, value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _request(kind: str, payload: Any, model: str, o: GenOptions) -> tuple[dict[str, Any], dict[str, Any]]:
    """(JSON body, openai request options) of one chat or completion request."""
    body: dict[str, Any] = {
        "model": model,
        "messages" if kind == "chat" else "prompt": payload,
        "max_tokens": o.max_tokens,
        "temperature": o.temperature,
        "top_p": o.top_p,
    }
    if o.stop:
        body["stop"] = o.stop
    if o.seed is not None:
        body["seed"] = o.seed
    if o.json_schema is not None:
        body["response_format"] = {"type": "json_schema", "json_schema": {"name": "output", "schema": o.json_schema}}
    # vLLM's extra sampling parameters (what the typed client would send as extra_body).
    for name, value in (
        ("top_k", o.top_k),
        ("repetition_penalty", o.repetition_penalty),
        ("min_tokens", o.min_tokens),
        ("priority", o.priority),
    ):
        if value is not None:
            body[name] = value
    if o.extra_body:
        body.update(o.extra_body)
    request_options: dict[str, Any] = {}
    if o.sticky_key:
        request_options["headers"] = {"X-Session-ID": o.sticky_key}
    if o.timeout_s is not None:
        request_options["timeout"] = o.timeout_s
    return body, request_options


def _transport_failure(exc: Exception, endpoint: str) -> LLMConnectionError:
    """A retryable connection error for what the openai client let through untyped: its HTTP
    library's errors outside the ones it maps, OS errors, and anyio's AttributeError on a
    connection whose peer died under uvloop (see TRANSPORT_ERRORS)."""
    return LLMConnectionError(f"connection failed: {type(exc).__name__}: {exc}", endpoint=endpoint)


def _map_error(exc: openai.APIError, endpoint: str) -> LLMError:
    if isinstance(exc, openai.APITimeoutError):
        return LLMTimeout(f"request timed out: {exc}", endpoint=endpoint)
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc.__context__
        return LLMConnectionError(f"connection failed: {cause or exc}", endpoint=endpoint)
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        message = f"HTTP {status}: {_error_message(exc)}"
        if status == 429:
            err = LLMRateLimited(message, endpoint=endpoint, status=status)
            err.retry_after = _retry_after_seconds(exc.response.headers.get("retry-after"))
            return err
        if status == 408:
            return LLMTimeout(message, endpoint=endpoint, status=status)
        if status >= 500:
            return LLMServerError(message, endpoint=endpoint, status=status)
        return LLMBadRequest(message, endpoint=endpoint, status=status)
    # A 2xx whose body did not parse (APIResponseValidationError and the like).
    return LLMServerError(f"malformed response: {exc}", endpoint=endpoint, status=getattr(exc, "status_code", None))


def _error_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])[:500]
        if isinstance(inner, str):
            return inner[:500]
    return str(exc.message)[:500]


def _retry_after_seconds(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        return None  # an HTTP date: rare from model servers; fall back to our backoff


def _to_result(data: Any, kind: str, endpoint: str, model: str) -> LLMResult:
    try:
        choice = data["choices"][0]
        text = choice["message"]["content"] if kind == "chat" else choice["text"]
        finish_reason = choice.get("finish_reason")
    except (KeyError, IndexError, TypeError) as exc:
        raise LLMServerError(f"malformed response: missing {exc}", endpoint=endpoint) from exc
    if not isinstance(text, str):
        raise LLMServerError("malformed response: no text in the first choice", endpoint=endpoint)
    usage = data.get("usage") or {}
    extra: dict[str, Any] = {}
    if isinstance(usage.get("completion_tokens"), int):
        prompt_tokens, completion_tokens = usage.get("prompt_tokens") or 0, usage["completion_tokens"]
    else:  # some servers omit usage: estimate so budgets still add up
        prompt_tokens, completion_tokens = 0, textutil.count_tokens(text)
        extra["usage_estimated"] = True
    details = usage.get("prompt_tokens_details") or {}
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    return LLMResult(
        text=text,
        finish_reason=finish_reason or "stop",
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        latency_s=0.0,
        model=data.get("model") or model,
        endpoint=endpoint,
        cached_tokens=cached,
        extra=extra,
    )
