"""Celery for production: Redis broker, late acks, one job per task, tasks safe to run twice.

A task only carries a job id. The job's state lives in the database, and a task claims
the job atomically before running it, so a redelivered task is harmless. A task runs a
job for at most `job_slice_seconds` (well under the broker's visibility timeout), then
re-queues it to resume from its checkpoints.

All tasks of one worker process share one asyncio loop (and so one LLM pool): the
Celery pool is threads, each task hands its job to that loop and waits.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time

from celery import Celery
from celery.signals import worker_ready

from agents.settings import Settings
from db import repo
from workers.retention import RetentionTimer
from workers.runtime import RELEASED, WorkerRuntime, new_event_loop

log = logging.getLogger("longform.worker")

RUN_JOB_TASK = "longform.run_job"


def celery_config(settings: Settings) -> dict:
    return {
        "broker_url": settings.broker_url,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_ignore_result": True,
        "task_default_queue": "longform",
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {
            "visibility_timeout": settings.broker_visibility_timeout,
            "priority_steps": list(range(10)),
            "sep": ":",
            "queue_order_strategy": "priority",
        },
        "worker_hijack_root_logger": False,
    }


# The worker process's app; `configure(settings)` gives it the process's settings before it starts.
app = Celery("longform")
settings: Settings | None = None


def configure(process_settings: Settings) -> Celery:
    global settings
    settings = process_settings
    app.conf.update(celery_config(process_settings))
    return app


class Enqueuer:
    """Sends job ids to the broker of the given settings (the API's side of the queue)."""

    def __init__(self, settings: Settings):
        self._app = Celery("longform-api")
        self._app.conf.update(celery_config(settings))

    def __call__(self, job_id: str, priority: int = 5) -> None:
        send_job(self._app, job_id, priority)


def send_job(celery: Celery, job_id: str, priority: int) -> None:
    # Redis priority: 0 is served first, matching our job priority.
    celery.send_task(RUN_JOB_TASK, args=[job_id], priority=max(0, min(9, priority)), queue="longform")


class _LoopThread:
    """One event loop per worker process, on its own thread, running every job of the process."""

    def __init__(self) -> None:
        self.loop = new_event_loop()
        self.runtime = WorkerRuntime(settings)
        self.runtime.enqueue = enqueue
        self.runtime.prepare()
        self.thread = threading.Thread(target=self.loop.run_forever, name="longform-jobs", daemon=True)
        self.thread.start()
        self.run(self.runtime.warm_up())

    def run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop)


_loop_thread: _LoopThread | None = None
_loop_lock = threading.Lock()


def loop_thread() -> _LoopThread:
    global _loop_thread
    with _loop_lock:
        if _loop_thread is None:
            _loop_thread = _LoopThread()
        return _loop_thread


# Set when a job may be queued in the database without a message in the broker: a task could
# not be sent (broker down), or a task ended in an error before or after running its job
# (database down: its message is acked all the same). The sweeper then sends every queued job
# again once the broker answers.
_resend_queued = threading.Event()


def enqueue(job_id: str, priority: int = 5) -> None:
    try:
        send_job(app, job_id, priority)
    except Exception:
        _resend_queued.set()
        raise


@app.task(name=RUN_JOB_TASK, acks_late=True, reject_on_worker_lost=True)
def run_job(job_id: str) -> str:
    runner = loop_thread()
    try:
        future = runner.run(runner.runtime.run_job(job_id, time_slice_s=settings.job_slice_seconds))
        outcome = future.result()
        if outcome == RELEASED:
            with runner.runtime.db.session() as session:
                job = repo.get_job(session, job_id)
                priority = job.priority if job else 5
            enqueue(job_id, priority)
    except Exception:
        _resend_queued.set()  # the job may be left queued with its message gone
        raise
    return outcome


def requeue_unfinished(include_queued: bool) -> int:
    """Send a task for every running job whose lease ran out (its worker died) and, at
    start-up, for every queued job too (the broker may have lost its messages). A job
    sent twice is harmless: the second task finds it claimed."""
    runtime = loop_thread().runtime
    with runtime.db.session() as session:
        jobs = repo.runnable_jobs(session, settings.job_lease_seconds, limit=100_000)
    count = 0
    for job_id, status, priority in jobs:
        if status == "running" or include_queued:
            enqueue(job_id, priority)
            count += 1
    return count


def broker_run_id() -> str | None:
    """The Redis broker's run_id, which changes when Redis restarts (and a Redis without
    persistence has then lost every queued message); None for other brokers."""
    if not settings.broker_url.startswith(("redis://", "rediss://")):
        return None
    import redis

    client = redis.Redis.from_url(settings.broker_url, socket_timeout=5, socket_connect_timeout=5)
    try:
        return str(client.info("server")["run_id"])
    finally:
        client.close()


def _sweeper() -> None:
    """Re-queue jobs of workers that died, and purge old finished jobs (RETENTION_DAYS, at most
    every 10 minutes), for as long as this worker lives. Queued jobs are sent again when their
    messages may be gone: the broker restarted or could not be reached, a send failed, or a
    task failed (see _resend_queued)."""
    retention = RetentionTimer()
    known_run_id, unreachable = None, False
    try:
        known_run_id = broker_run_id()
    except Exception:
        unreachable = True
    while True:
        time.sleep(max(1.0, settings.job_lease_seconds))
        try:
            run_id = broker_run_id()
        except Exception:
            log.warning("the broker cannot be reached; queued jobs are sent again once it answers")
            unreachable = True
            continue
        messages_lost = unreachable or run_id != known_run_id or _resend_queued.is_set()
        known_run_id, unreachable = run_id, False
        _resend_queued.clear()
        try:
            count = requeue_unfinished(include_queued=messages_lost)
            if messages_lost and count:
                log.info("the broker restarted or was unreachable: sent %d unfinished jobs again", count)
        except Exception:
            log.exception("sweep for unfinished jobs failed")
            if messages_lost:
                _resend_queued.set()  # try again at the next sweep
        retention.maybe_purge(loop_thread().runtime.db, settings)


@worker_ready.connect
def _on_worker_ready(**_kwargs) -> None:
    count = requeue_unfinished(include_queued=True)
    if count:
        log.info("re-queued %d unfinished jobs", count)
    threading.Thread(target=_sweeper, name="longform-sweeper", daemon=True).start()
    _serve_metrics()


def _serve_metrics() -> None:
    """LLM pool and checkpoint metrics of this worker process, for Prometheus to scrape."""
    if settings.worker_metrics_port:
        from prometheus_client import start_http_server

        start_http_server(settings.worker_metrics_port, addr="0.0.0.0")

