"""bench/load.py's open-loop pacing (the benchmark itself runs outside the suite)."""
from __future__ import annotations

import asyncio
import time

from bench import load


async def test_paced_requests_run_even_when_the_schedule_is_behind():
    """At a rate the loop cannot keep, the requests already started must still run (a pacer that
    never yields spins for ever), and each is given its planned time, not its send time."""
    stop, sent = asyncio.Event(), []

    async def send(n: int, planned: float) -> None:
        sent.append((n, planned, time.perf_counter()))
        if len(sent) >= 50:
            stop.set()

    await asyncio.wait_for(load.paced(1e9, None, stop, send), 5)
    assert len(sent) >= 50 and all(planned <= started for _, planned, started in sent)


async def test_paced_sends_count_requests_on_schedule():
    sent = []

    async def send(n: int, planned: float) -> None:
        sent.append(n)

    started = time.perf_counter()
    await load.paced(200, 20, None, send)
    assert sorted(sent) == list(range(20)) and time.perf_counter() - started >= 19 / 200
