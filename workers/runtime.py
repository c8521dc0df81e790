"""Runs one job: claim it, run its agent step by step, keep its lease, record the outcome.

The same code serves the embedded in-process worker and Celery workers. One runtime per
worker process holds the shared LLM client, so every job in the process shares the
pool's limits.
"""
from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import socket
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from pydantic import ValidationError

import prompts
from agents import fingerprints
from agents.context import Budget, JobCancelled, JobContext
from agents.kinds import JobKind, get_kind, validate_params
from agents.llm.types import LLMClient
from agents.redact import protect, redact
from agents.settings import Settings
from db import repo
from db.session import Database
from workers.job_services import DbJobServices
from workers.step_store import DbEventSink, DbStepStore

log = logging.getLogger("longform.worker")

# Outcomes of run_job besides the job statuses.
SKIPPED = "skipped"  # another worker holds it, or it is already finished
RELEASED = "released"  # handed back to the queue unfinished (time slice over, shutdown)


# Blocking work of the jobs (claims, final results, events, reads, big tokenizations) runs on
# the loop's default executor; step checkpoints have their own writer thread. asyncio sizes
# the executor by CPU count (6 threads on 2 cores), too few for hundreds of I/O-bound jobs:
# reads queued behind writes. Many more only make the threads fight over the one SQLite
# writer and the GIL (measured with bench/overhead.py and bench/dataset_build.py).
BLOCKING_THREADS = 12


def new_event_loop() -> asyncio.AbstractEventLoop:
    """The loop a worker runs its jobs on: uvloop where installed (it comes with uvicorn's
    standard extras on Linux and cuts the loop's own CPU per request), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        loop = asyncio.new_event_loop()
    else:
        loop = uvloop.new_event_loop()
    loop.set_default_executor(ThreadPoolExecutor(BLOCKING_THREADS, thread_name_prefix="longform-io"))
    return loop


def calibration_text(prompts: int = 40) -> str:
    """Mixed English and Chinese text (the bundled prompt set's first prompts) to calibrate
    the model's token count with."""
    from agents.evaluation import BUNDLED_PROMPT_SET, load_prompt_set

    return "\n".join(item.prompt for item in load_prompt_set(BUNDLED_PROMPT_SET)[:prompts])


class WorkerRuntime:
    def __init__(
        self,
        settings: Settings,
        llm: LLMClient | None = None,
        judge: LLMClient | None = None,
        db: Database | None = None,
    ):
        self.settings = settings
        protect(settings)  # the model servers' keys and the database password stay out of logs and errors
        self.db = db or Database(settings.database_url)
        self._llm = llm
        self._judge = judge
        self._judge_made = judge is not None
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        # How a job created here becomes runnable: a Celery task, or a wake-up of the embedded worker.
        self.enqueue: Callable[[str, int], None] = lambda job_id, priority: None
        self.services = DbJobServices(self.db, settings, lambda job_id, priority: self.enqueue(job_id, priority),
                                      run_queued_child=self.run_queued_child)
        # Jobs running here, each with its agent task and cancel flag; one lease keeper renews them all.
        self._active: dict[str, tuple[asyncio.Task, asyncio.Event]] = {}
        self._keeper: asyncio.Task | None = None

    @property
    def llm(self) -> LLMClient:
        if self._llm is None:
            from agents.llm.factory import make_llm_client

            self._llm = make_llm_client(self.settings)
        return self._llm

    @property
    def judge(self) -> LLMClient | None:
        if not self._judge_made:
            from agents.llm.factory import make_judge_client

            self._judge = make_judge_client(self.settings)
            self._judge_made = True
        return self._judge

    def prepare(self) -> None:
        """Build the model clients, load the tokenizer and compile the prompt templates at
        start-up (imports, configuration errors) rather than in the first jobs."""
        from agents.text import count_tokens

        _ = self.llm, self.judge
        count_tokens("warm up")
        prompts.warm()
        if self.settings.prompts_dir and not os.path.isdir(self.settings.prompts_dir):
            log.warning("PROMPTS_DIR %s is not a directory: jobs use the bundled templates", self.settings.prompts_dir)
        if self.settings.sandbox == "unsafe":
            log.warning("SANDBOX=unsafe: model-written code will run WITHOUT isolation on this machine "
                        "(rlimits and a wall clock only); every run logs this again")

    def model_status(self) -> dict[str, Any] | None:
        """State of the embedded model's process, when this worker runs one (for /readyz)."""
        from agents.llm.embedded_process import EmbeddedModel

        return self._llm.status() if isinstance(self._llm, EmbeddedModel) else None

    async def warm_up(self) -> None:
        """Learn each model's context window (`max_model_len`) and calibrate the token count
        once at start-up, so the first jobs plan with the server's figures and a burst of them
        does not wait. For the embedded model this also starts its process and self-test."""
        for client in (self.llm, self.judge):
            if client is not None:
                await client.ensure_ready()
        try:
            await self.llm.count_tokens(calibration_text())
        except Exception as exc:  # the model server may not be up yet: jobs calibrate later
            log.info("token count calibration at start-up failed: %s", exc)

    async def aclose(self) -> None:
        for client in (self._llm, self._judge):
            if client is not None:
                await client.aclose()

    async def _db(self, fn, *args, **kwargs):
        def call():
            with self.db.session() as session:
                return fn(session, *args, **kwargs)

        return await asyncio.to_thread(call)

    async def run_job(self, job_id: str, *, time_slice_s: float | None = None) -> str:
        """Claim a job and run it to an end, or until its time slice is over. Returns the outcome."""
        claimed = await self._db(repo.claim_job, job_id, self.worker_id, self.settings.job_lease_seconds)
        if claimed is None:
            return SKIPPED
        return await self.run_claimed(claimed, time_slice_s=time_slice_s)

    async def run_queued_child(self, parent_id: str) -> bool:
        """Claim one queued child of a waiting parent and run it in the parent's slot (claimed
        atomically like any job, so a worker that gets its task later skips it). False: none."""
        lease = self.settings.job_lease_seconds

        def claim(session) -> list[repo.ClaimedJob]:
            return repo.claim_jobs(session, repo.queued_child_ids(session, parent_id), self.worker_id, lease)

        claimed = await self._db(claim)
        if not claimed:
            return False
        await self.run_claimed(claimed[0])
        return True

    async def claim_runnable(self, limit: int, exclude: set[str]) -> list[repo.ClaimedJob]:
        """Claim up to `limit` runnable jobs (by priority, then age) in one transaction."""
        lease = self.settings.job_lease_seconds

        def claim(session) -> list[repo.ClaimedJob]:
            job_ids = repo.runnable_job_ids(session, lease, limit, exclude=exclude)
            return repo.claim_jobs(session, job_ids, self.worker_id, lease)

        return await self._db(claim)

    async def run_claimed(self, claimed: repo.ClaimedJob, *, time_slice_s: float | None = None) -> str:
        """Run a job this worker has claimed."""
        job_id, kind_name, params_json, priority = claimed.id, claimed.kind, claimed.params, claimed.priority
        cancel_flag = asyncio.Event()
        try:
            kind = get_kind(kind_name)
            params = validate_params(kind_name, params_json, self.settings)
        except Exception as exc:  # stored params no longer valid (code changed): fail, don't loop
            await self._db(repo.finish_job, job_id, self.worker_id, "failed", error=f"invalid params: {exc}")
            return "failed"
        try:  # the job's prompt set, then PROMPTS_DIR, then the bundled templates
            overlay = self.settings.prompt_overlay(claimed.prompt_set)
        except prompts.UnknownPromptSet as exc:  # the set was removed since the job was submitted
            await self._db(repo.finish_job, job_id, self.worker_id, "failed", error=str(exc))
            return "failed"
        if claimed.succeeded or claimed.retry_mode:
            stale = await self._db(self._settle_stale_steps, claimed, kind, overlay)
            if stale:  # a person chooses: retry with mode reuse or fresh
                await self._db(repo.finish_job, job_id, self.worker_id, "failed",
                               error=f"{fingerprints.describe(stale)}; retry with mode 'reuse' or 'fresh'")
                return "failed"
        budget = Budget(claimed.max_calls, claimed.max_tokens_total)
        if budget.limited and claimed.runs > 1:  # what the steps of earlier runs used counts
            used = await self._db(repo.job_usage, job_id)
            budget.calls, budget.tokens = used["calls"], used["prompt_tokens"] + used["completion_tokens"]

        ctx = JobContext(
            self.llm,
            store=DbStepStore(self.db, job_id),
            events=DbEventSink(self.db, job_id),
            settings=self.settings,
            job_id=job_id,
            priority=priority if self.settings.llm_priority_scheduling else None,
            is_cancelled=cancel_flag.is_set,
            judge=self.judge,
            services=self.services,
            succeeded=claimed.succeeded,
            kind_version=kind.version,
            prompt_set=claimed.prompt_set,
            budget=budget,
        )
        # A context of its own: a child run inside its waiting parent's task must not see the
        # parent's running step (agents.context's usage variable).
        agent = asyncio.create_task(kind.run(ctx, params), name=f"job-{job_id}", context=contextvars.Context())
        self._active[job_id] = (agent, cancel_flag)
        self._ensure_keeper()
        deadline = time.monotonic() + time_slice_s if time_slice_s else None
        try:
            if deadline is None:
                await asyncio.wait({agent})
            else:
                await asyncio.wait({agent}, timeout=max(0.0, deadline - time.monotonic()))
        except asyncio.CancelledError:  # the worker itself is stopping: hand the job back
            agent.cancel()
            await asyncio.gather(agent, return_exceptions=True)
            await asyncio.shield(self._db(repo.release_job, job_id, self.worker_id))
            raise
        finally:
            self._active.pop(job_id, None)
            if not self._active and self._keeper is not None:
                self._keeper.cancel()  # nothing left to keep; the next job starts a new keeper

        if not agent.done():  # time slice over: checkpoints are kept, another task resumes it
            agent.cancel()
            await asyncio.gather(agent, return_exceptions=True)
            await self._db(repo.release_job, job_id, self.worker_id)
            return RELEASED
        return await self._record_outcome(job_id, kind, agent, cancel_flag)

    def current_models(self) -> dict[str, str]:
        """The model of each client, where known (a pool learns its model on first use)."""
        models = {"llm": self.llm.model_name}
        if self.judge is not None:
            models["judge"] = self.judge.model_name
        return {role: name for role, name in models.items() if name}

    def _settle_stale_steps(self, session, claimed: repo.ClaimedJob, kind: JobKind,
                            overlay: prompts.Overlay | None = None) -> list[dict[str, Any]]:
        """Compare the stored steps with the code. Without a retry mode, return the stale ones
        (the job then fails); `reuse` keeps them under new fingerprints; `fresh` drops them
        and the steps that depend on them (claimed.succeeded loses those keys)."""
        models = self.current_models()
        steps = [fingerprints.StoredStep(*row) for row in repo.stored_steps(session, claimed.id)]
        stale = fingerprints.stale_steps(steps, kind.version, models, overlay)
        mode, claimed.retry_mode = claimed.retry_mode, None
        if mode is not None:
            repo.clear_retry_mode(session, claimed.id)
        if not stale or mode is None:
            return stale
        stale_keys = {s["key"] for s in stale}
        if mode == "reuse":
            repo.restamp_steps(session, claimed.id, {
                s.key: fingerprints.restamped(s.fingerprint, kind.version, models, overlay)
                for s in steps if s.key in stale_keys
            })
        else:
            dropped = fingerprints.with_dependents(steps, stale_keys)
            repo.drop_steps(session, claimed.id, dropped)
            for key in dropped:
                claimed.succeeded.pop(key, None)
            log.info("job %s: dropped %d stale or dependent steps for a fresh run", claimed.id, len(dropped))
        return []

    def _ensure_keeper(self) -> None:
        if self._keeper is None or self._keeper.done():
            self._keeper = asyncio.create_task(self._keep_leases(), name="lease-keeper")

    async def _keep_leases(self) -> None:
        """Renew the leases of every job running here in one statement, and stop the jobs that
        were cancelled or taken over. One write per interval, however many jobs run."""
        interval = max(0.2, min(1.0, self.settings.job_lease_seconds / 4))
        while self._active:
            await asyncio.sleep(interval)
            try:
                to_stop = await self._db(repo.heartbeat, self.worker_id, list(self._active))
            except Exception:  # a database hiccup must not kill the jobs; the next beat retries
                log.exception("heartbeat failed")
                continue
            for job_id in to_stop:
                if job_id in self._active:
                    agent, cancel_flag = self._active[job_id]
                    cancel_flag.set()
                    agent.cancel()  # closes in-flight model calls; finished steps stay stored

    async def _record_outcome(self, job_id: str, kind: JobKind, agent: asyncio.Task, cancel_flag: asyncio.Event) -> str:
        result = None
        if agent.cancelled() or isinstance(agent.exception(), JobCancelled) or cancel_flag.is_set():
            status, error = "cancelled", "cancelled"
        elif agent.exception() is not None:
            exc = agent.exception()
            log.warning("job %s failed: %s: %s", job_id, type(exc).__name__, exc)
            status, error = "failed", redact(f"{type(exc).__name__}: {exc}")  # stored, and sent as an event
        else:
            try:
                result = kind.validate_result(agent.result())
                status, error = "succeeded", None
            except ValidationError as exc:  # the kind's code and its result model disagree
                log.error("job %s: result does not fit %s: %s", job_id, kind.result.__name__, exc)
                status, error = "failed", f"the result does not fit {kind.result.__name__}: {exc}"

        def record(session) -> bool:
            stored = result.model_dump(mode="json") if result is not None else None
            done = repo.finish_job(session, job_id, self.worker_id, status, result=stored, error=error)
            if done and result is not None:
                for score in kind.scores(result):
                    repo.put_score(session, job_id, score.metric, score.value, score.detail)
            return done

        recorded = await self._db(record)
        return status if recorded else SKIPPED
