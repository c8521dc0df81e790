"""The embedded worker: runs queued jobs inside the `longform serve` process.

The database is the queue: the worker polls it for queued jobs (by priority, then age)
and for running jobs whose lease ran out (a crashed process), so unfinished jobs are
picked up again on start. It runs on its own thread and event loop, many jobs at once.
"""
from __future__ import annotations

import asyncio
import logging
import threading

from agents.settings import Settings
from db import deletion, repo
from workers.retention import RetentionTimer
from workers.runtime import WorkerRuntime, new_event_loop

log = logging.getLogger("longform.worker")


class EmbeddedWorker:
    def __init__(self, settings: Settings, runtime: WorkerRuntime | None = None, poll_s: float = 0.2):
        self.settings = settings
        self.runtime = runtime or WorkerRuntime(settings)
        self.runtime.enqueue = lambda _job_id, _priority: self.notify()
        self.poll_s = poll_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._wake: asyncio.Event | None = None
        self._stopping = False
        self._started = threading.Event()
        self.tasks: dict[str, asyncio.Task] = {}
        self.retention = RetentionTimer()
        self._purge: asyncio.Task | None = None

    # -- lifecycle, called from other threads ----------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._thread_main, name="longform-embedded-worker", daemon=True)
        self._thread.start()
        self._started.wait(120)

    def notify(self) -> None:
        """A job was queued: look now instead of at the next poll."""
        if self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping = True
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake.set)
        if self._thread is not None:
            self._thread.join(timeout)

    # -- the worker loop ----------------------------------------------------------------------

    def _thread_main(self) -> None:
        self._loop = new_event_loop()
        asyncio.set_event_loop(self._loop)
        self._wake = asyncio.Event()
        try:
            self.runtime.prepare()  # before the server answers: the first jobs find everything ready
        finally:
            self._started.set()
        try:
            self._loop.run_until_complete(self._main())
        finally:
            self._loop.close()

    async def _main(self) -> None:
        capacity = self.settings.worker_concurrency
        warm_up = asyncio.create_task(self.runtime.warm_up())
        while not self._stopping:
            free = capacity - len(self.tasks)
            if free > 0:
                try:  # claimed in one transaction: a burst of new jobs starts at once
                    claimed = await self.runtime.claim_runnable(free, exclude=set(self.tasks))
                except Exception:
                    log.exception("could not poll the job queue")
                    claimed = []
                for job in claimed:
                    self.tasks[job.id] = asyncio.create_task(self._run(job))
            if (self._purge is None or self._purge.done()) and self.retention.due(self.settings):
                self._purge = asyncio.create_task(asyncio.to_thread(self._run_purge))
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), self.poll_s)
            except asyncio.TimeoutError:
                pass
        for task in self.tasks.values():
            task.cancel()  # each hands its job back to the queue
        await asyncio.gather(warm_up, *self.tasks.values(), *([self._purge] if self._purge else []),
                             return_exceptions=True)
        await self.runtime.aclose()

    def _run_purge(self) -> None:
        """RETENTION_DAYS: delete old finished jobs (on a thread: the loop keeps polling)."""
        try:
            deletion.purge(self.runtime.db, self.settings.longform_data_dir, self.settings.retention_days)
        except Exception:
            log.exception("retention purge failed")

    async def _run(self, job: repo.ClaimedJob) -> None:
        job_id = job.id
        try:
            await self.runtime.run_claimed(job)
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("job %s crashed the runner", job_id)
        finally:
            self.tasks.pop(job_id, None)
            self._wake.set()  # a slot is free
