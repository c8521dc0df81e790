"""Continuous-batching admission: at most max_num_seqs sequences run, the rest wait in order.

FCFS by default; with the "priority" policy a lower `priority` value is admitted first (ties by
arrival), like vLLM's --scheduling-policy priority. A waiting request whose client goes away
leaves the queue; a running one frees its slot.
"""
from __future__ import annotations

import asyncio
import heapq
import itertools
from contextlib import asynccontextmanager


class Scheduler:
    def __init__(self, max_num_seqs: int, policy: str = "fcfs"):
        self.max_num_seqs = max_num_seqs
        self.policy = policy
        self.running = 0
        self.waiting = 0
        self.max_running_seen = 0
        self.max_waiting_seen = 0
        self._queue: list[tuple[tuple[int, int], asyncio.Future]] = []
        self._arrivals = itertools.count()

    def resize(self, max_num_seqs: int, policy: str | None = None) -> None:
        self.max_num_seqs = max_num_seqs
        if policy:
            self.policy = policy
        self._admit_waiting()

    def reset_peaks(self) -> None:
        self.max_running_seen = self.running
        self.max_waiting_seen = self.waiting

    @asynccontextmanager
    async def slot(self, priority: int = 0):
        await self._acquire(priority)
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, priority: int) -> None:
        if self.running < self.max_num_seqs and not self.waiting:
            self._start_one()
            return
        future = asyncio.get_running_loop().create_future()
        key = (priority if self.policy == "priority" else 0, next(self._arrivals))
        heapq.heappush(self._queue, (key, future))
        self.waiting += 1
        self.max_waiting_seen = max(self.max_waiting_seen, self.waiting)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self._release()  # admitted just as the client left: hand the slot on
            else:
                future.cancel()
                self.waiting -= 1
            raise

    def _start_one(self) -> None:
        self.running += 1
        self.max_running_seen = max(self.max_running_seen, self.running)

    def _release(self) -> None:
        self.running -= 1
        self._admit_waiting()

    def _admit_waiting(self) -> None:
        while self._queue and self.running < self.max_num_seqs:
            _, future = heapq.heappop(self._queue)
            if future.cancelled():
                continue
            self.waiting -= 1
            self._start_one()
            future.set_result(None)
