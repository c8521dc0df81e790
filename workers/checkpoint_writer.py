"""Group commit for step checkpoints: one writer thread per database writes every job's
checkpoints, and those that arrive while a write is in flight go together in the next
transaction.

Hundreds of jobs in one process checkpoint at once. Written one transaction each, on the
loop's thread pool, they queue for threads and (on SQLite) for the single writer; batched,
a burst costs a few transactions and a checkpoint waits at most for the batch before it.
"""
from __future__ import annotations

import asyncio
import itertools
import threading
import time
from typing import Any, Callable

from prometheus_client import Histogram

from db.session import Database

_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
CHECKPOINT_SECONDS = Histogram(
    "longform_step_checkpoint_seconds",
    "Database time of one step checkpoint (start: the running row; finish: the output): "
    "its transaction's time divided by the checkpoints committed in it",
    ["phase"],
    buckets=_BUCKETS,
)
CHECKPOINT_WAIT_SECONDS = Histogram(
    "longform_step_checkpoint_wait_seconds",
    "Time a step waits for its checkpoint, from asking until it is committed (queueing included)",
    ["phase"],
    buckets=_BUCKETS,
)

# build(dialect) -> (statement, parameters); see db.repo.step_started / step_ended.
StatementBuilder = Callable[[str], tuple[Any, dict[str, Any]]]


class _Pending:
    __slots__ = ("phase", "statement", "params", "loop", "future", "asked_at")

    def __init__(self, phase: str, statement: Any, params: dict[str, Any], loop, future):
        self.phase, self.statement, self.params = phase, statement, params
        self.loop, self.future = loop, future
        self.asked_at = time.perf_counter()


class CheckpointWriter:
    def __init__(self, db: Database):
        self.db = db
        self._pending: list[_Pending] = []
        self._ready = threading.Condition()
        self._thread: threading.Thread | None = None

    async def write(self, phase: str, build: StatementBuilder) -> None:
        """Commit one checkpoint statement; returns once it is durable."""
        statement, params = build(self.db.engine.dialect.name)
        loop = asyncio.get_running_loop()
        item = _Pending(phase, statement, params, loop, loop.create_future())
        with self._ready:
            self._pending.append(item)
            self._ready.notify()
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="longform-checkpoints", daemon=True)
                self._thread.start()
        await item.future

    def _run(self) -> None:
        while True:
            with self._ready:
                while not self._pending:
                    self._ready.wait()
                batch, self._pending = self._pending, []
            started = time.perf_counter()
            try:
                outcomes = self._commit(batch)
            except BaseException as exc:  # never leave a step waiting, nor the thread dead
                outcomes = [exc] * len(batch)
            done = time.perf_counter()
            for item, error in zip(batch, outcomes):
                if error is None:
                    CHECKPOINT_SECONDS.labels(item.phase).observe((done - started) / len(batch))
                    CHECKPOINT_WAIT_SECONDS.labels(item.phase).observe(done - item.asked_at)
                _settle(item, error)

    def _commit(self, batch: list[_Pending]) -> list[BaseException | None]:
        """Write the batch in one transaction; if that fails, each item on its own, so one bad
        checkpoint fails only its own step."""
        if len(batch) == 1:  # alone: one autocommitted statement is the cheapest write
            return [self._commit_one(batch[0])]
        try:
            with self.db.writing() as conn:
                # Consecutive checkpoints of the same kind go as one executemany.
                for _, group in itertools.groupby(batch, key=lambda item: id(item.statement)):
                    group = list(group)
                    conn.execute(group[0].statement, [item.params for item in group])
            return [None] * len(batch)
        except Exception:
            return [self._commit_one(item) for item in batch]

    def _commit_one(self, item: _Pending) -> BaseException | None:
        try:
            self.db.execute_autocommit(item.statement, item.params)
            return None
        except Exception as exc:
            return exc


def _settle(item: _Pending, error: BaseException | None) -> None:
    def settle() -> None:
        if not item.future.done():
            if error is None:
                item.future.set_result(None)
            else:
                item.future.set_exception(error)

    try:
        item.loop.call_soon_threadsafe(settle)
    except RuntimeError:  # the job's loop has closed (worker shutting down): nobody waits
        pass


_writers: dict[str, CheckpointWriter] = {}
_writers_lock = threading.Lock()


def writer_for(db: Database) -> CheckpointWriter:
    """The process's checkpoint writer for this database."""
    with _writers_lock:
        writer = _writers.get(db.url)
        if writer is None:
            writer = _writers[db.url] = CheckpointWriter(db)
        return writer
