"""Load: 2,000 queued jobs of mixed kinds through Celery and PostgreSQL with two worker processes,
and the API's latency under that load.

Starts the fake vLLM server in timing mode (so jobs take real time), `longform serve` in API-only
mode (BROKER_URL set, API keys required), two `longform worker` processes, then submits the jobs
(chat, write single and agentwrite, summarize of a small uploaded document, lengthen, solve and
small dataset builds) while status polls (GET /v1/jobs/{id}) follow them. Before the clock
starts, a few rounds of the mix run under another key (workers import each kind's code on its
first job). The jobs are followed in the database (not through the API) until every one has
ended.

Two ways to load the API, both from one asyncio loop (async httpx), each request timed on the
client so the figures include the client's own delays (its event loop's lateness is printed):
- open loop (the default, `--submit-rate 25 --poll-rate 100`): request n is sent at
  start + n / rate whatever the answers, as independent users do, and its latency counts from
  that planned time. 25 jobs a second is above what the fake model server finishes (about 14),
  so the queue grows the whole time: this is the latency the targets are about. The run says
  whether the generator kept its schedule (on 2 shared cores it cannot much above this rate).
- closed loops (`--submit-rate 0`): --submitters clients each send the next job as soon as the
  last is answered, --pollers clients poll with --poll-interval between polls. The submit rate
  rises until the API is the bottleneck, so this measures the API's saturation: its
  throughput, and latencies that are mostly requests waiting on each other.

Targets: p99 under 100 ms for submit and under 50 ms for status; nothing lost (a job submitted
with a 2xx that is missing, or not ended by the deadline).
Last line: {"jobs": n, "p99_submit_ms": x, "p99_status_ms": y, "lost": 0, ...}

Run: .venv/bin/python bench/load.py [--jobs 2000] [--submit-rate 25] [--poll-rate 100]
     [--submit-rate 0 --submitters 4 --pollers 4 --poll-interval 0.02]
     [--database-url URL] [--redis-url redis://127.0.0.1:6379/11] [--api-processes 1]
     [--worker-concurrency 128] [--deadline 420] [--keep-going]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import resource
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import timezone
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterator

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.service import scratch_postgres_database  # noqa: E402
from db import repo  # noqa: E402
from db.schema import upgrade  # noqa: E402
from db.session import Database  # noqa: E402
from fakellm.runner import start_fake_server  # noqa: E402
from tests.processes import LongformProcess, start_serve, start_worker  # noqa: E402

TARGET_SUBMIT_MS = 100.0
TARGET_STATUS_MS = 50.0
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/11"  # 12 is bench/overhead.py's, 13 and 14 the tests'
FINISHED = ("succeeded", "failed", "cancelled")

# vLLM timing with short natural answers: every call takes real time, a job's model work stays
# small (a few calls of about 100 tokens), and the server's capacity (16 sequences at 10 ms a
# token: 1,600 tokens/s) is below what the clients submit, so the jobs queue up behind the model
# as a batch does on a real GPU server, and 2,000 jobs still end in a few minutes.
FAKE_CONFIG = dict(timing=True, max_num_seqs=16, decode_s_per_token=0.01, ttft_s=0.01, max_model_len=32768,
                   natural_min_words=40, natural_max_words=120, default_min_words=30, default_max_words=80)

TOPICS = ["lighthouses", "urban beekeeping", "container shipping", "glaciers", "the printing press",
          "night trains", "bread chemistry", "coral reefs", "public libraries", "desert farming"]

# A small document (about 700 words, one chunk) for the summarize jobs.
DOCUMENT = "\n\n".join(
    f"Chapter {n}. " + " ".join(
        f"The keeper of the {topic} light wrote in the log that the weather on day {n} was calm and the ships passed."
        for topic in TOPICS)
    for n in range(1, 5)
)


MIX_SIZE = 10  # jobs in one rotation of the mix below


def job_request(index: int, document_id: str) -> tuple[str, str, dict[str, Any]]:
    """(mix label, path, body) of the index-th job: a fixed rotation over the kinds, each sized
    to a few short model calls."""
    topic = TOPICS[index % len(TOPICS)]
    mix = [
        ("chat", "/v1/jobs", {"kind": "chat", "params": {
            "messages": [{"role": "user", "content": f"Say something about {topic} (job {index})."}], "max_tokens": 48}}),
        ("write/single", "/v1/jobs", {"kind": "write", "params": {
            "instruction": f"Write a short note of about 80 words on {topic} (job {index}).",
            "method": "single", "target_words": 80}}),
        ("chat", "/v1/jobs", {"kind": "chat", "params": {
            "messages": [{"role": "user", "content": f"Name one fact about {topic} (job {index})."}], "max_tokens": 32}}),
        ("summarize", "/v1/jobs", {"kind": "summarize", "params": {
            "document_id": document_id, "target_words": 60, "length_samples": 1}}),
        ("write/agentwrite", "/v1/jobs", {"kind": "write", "params": {
            "instruction": f"Write an essay of about 300 words on {topic} (job {index}).",
            "method": "agentwrite", "target_words": 300}}),
        ("solve/text", "/v1/jobs", {"kind": "solve", "params": {
            "question": f"What is {index % 97 + 3} times 7? Answer as <<<number>>>.", "method": "text",
            "max_tokens": 64}}),
        ("lengthen", "/v1/jobs", {"kind": "lengthen", "params": {
            "instruction": f"Write about {topic} (job {index}).",
            "text": f"{topic.capitalize()} matter. They have a long history and a clear future.",
            "micro_iterations": 1}}),
        ("write/single", "/v1/jobs", {"kind": "write", "params": {
            "instruction": f"Write a paragraph of about 60 words on {topic} (job {index}).",
            "method": "single", "target_words": 60}}),
        ("chat", "/v1/jobs", {"kind": "chat", "params": {
            "messages": [{"role": "user", "content": f"One line on {topic} (job {index})."}], "max_tokens": 24}}),
        ("dataset", "/v1/datasets", {"recipe": "longwriter", "items": [
            {"instruction": f"Write about {topic}, part {part} (build {index}).", "target_words": 60}
            for part in (1, 2)], "write": {"method": "single"}}),
    ]
    assert len(mix) == MIX_SIZE
    return mix[index % MIX_SIZE]


@dataclass
class Measurements:
    submit_ms: list[float] = field(default_factory=list)
    status_ms: list[float] = field(default_factory=list)
    status_during_submit_ms: list[float] = field(default_factory=list)
    submitted: dict[str, str] = field(default_factory=dict)  # job id -> mix label
    submitted_ids: list[str] = field(default_factory=list)  # in submit order, for the pollers
    submit_errors: Counter = field(default_factory=Counter)
    status_errors: Counter = field(default_factory=Counter)
    submitting: bool = True
    submit_seconds: float = 0.0


async def submit_one(client: httpx.AsyncClient, index: int, document_id: str, m: Measurements, keep_going: bool,
                     since: float) -> None:
    """Submit the index-th job of the mix; its latency counts from `since` (the planned time
    under a paced load, else the moment it is sent)."""
    label, path, body = job_request(index, document_id)
    try:
        response = await client.post(path, json=body)
    except httpx.HTTPError as exc:
        m.submit_errors[type(exc).__name__] += 1
        if not keep_going:
            raise
        return
    m.submit_ms.append((time.perf_counter() - since) * 1000)
    if response.is_success:
        job_id = response.json()["id"]
        m.submitted[job_id] = label
        m.submitted_ids.append(job_id)
    else:
        m.submit_errors[f"{response.status_code} {label}: {response.text[:200]}"] += 1
        if not keep_going:
            raise SystemExit(f"submit of {label} answered {response.status_code}: {response.text[:500]}")


async def poll_one(client: httpx.AsyncClient, job_id: str, m: Measurements, since: float) -> None:
    during_submit = m.submitting
    try:
        response = await client.get(f"/v1/jobs/{job_id}")
    except httpx.HTTPError as exc:
        m.status_errors[type(exc).__name__] += 1
        return
    elapsed = (time.perf_counter() - since) * 1000
    m.status_ms.append(elapsed)
    if during_submit:
        m.status_during_submit_ms.append(elapsed)
    if not response.is_success:
        m.status_errors[f"{response.status_code}: {response.text[:200]}"] += 1


def pick_job(m: Measurements, rng: random.Random) -> str:
    return rng.choice(m.submitted_ids[-500:])  # mostly jobs still queued or running


async def submitter(url: str, headers: dict, document_id: str, next_index: Iterator[int], count: int,
                    m: Measurements, keep_going: bool) -> None:
    """Closed loop: the next job is sent as soon as the last one is answered."""
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as client:
        for index in next_index:
            if index >= count:
                return
            await submit_one(client, index, document_id, m, keep_going, time.perf_counter())


async def poller(url: str, headers: dict, m: Measurements, stop: asyncio.Event, interval_s: float,
                 seed: int) -> None:
    """Closed loop: polls the status of a random submitted job, waits, and polls again."""
    rng = random.Random(seed)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as client:
        while not stop.is_set():
            if not m.submitted_ids:
                await asyncio.sleep(0.01)
                continue
            await poll_one(client, pick_job(m, rng), m, time.perf_counter())
            if interval_s:
                await asyncio.sleep(interval_s)


async def paced(rate: float, count: int | None, stop: asyncio.Event | None, send: Callable[[int, float], Awaitable]) -> None:
    """Open loop: request n is sent at start + n / rate whether or not the earlier ones were
    answered, as independent users do, and its latency counts from that planned time, so a slow
    API cannot hide its delay by slowing its clients down (coordinated omission)."""
    start = time.perf_counter()
    in_flight: set[asyncio.Task] = set()
    n = 0
    while (count is None or n < count) and not (stop and stop.is_set()):
        planned = start + n / rate
        # Always yield, even when behind schedule: the requests already started must run.
        await asyncio.sleep(max(0.0, planned - time.perf_counter()))
        task = asyncio.create_task(send(n, planned))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
        n += 1
    await asyncio.gather(*in_flight)


def paced_clients(apis: list[str], headers: dict) -> list[httpx.AsyncClient]:
    # Enough connections that requests waiting on a slow API never wait for a connection too.
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    return [httpx.AsyncClient(base_url=api, headers=headers, timeout=60, limits=limits) for api in apis]


async def paced_submits(apis: list[str], headers: dict, document_id: str, args: argparse.Namespace,
                        m: Measurements) -> None:
    clients = paced_clients(apis, headers)  # requests spread round-robin, as a load balancer would
    try:
        await paced(args.submit_rate, args.jobs, None, lambda n, planned: submit_one(
            clients[n % len(clients)], n, document_id, m, args.keep_going, planned))
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))


async def paced_polls(apis: list[str], headers: dict, args: argparse.Namespace, m: Measurements,
                      stop: asyncio.Event) -> None:
    clients, rng = paced_clients(apis, headers), random.Random(0)
    while not m.submitted_ids and not stop.is_set():
        await asyncio.sleep(0.01)

    async def poll(n: int, planned: float) -> None:
        await poll_one(clients[n % len(clients)], pick_job(m, rng), m, planned)

    try:
        await paced(args.poll_rate, None, stop, poll)
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))


def job_states(db: Database, ids: list[str]) -> dict[str, tuple[str, str | None]]:
    """id -> (status, error) of the given jobs, read straight from the database (not the API,
    so following the jobs does not add to the load being measured)."""
    import sqlalchemy as sa

    from db.models import Job

    states: dict[str, tuple[str, str | None]] = {}
    with db.reading() as session:
        for start in range(0, len(ids), 1000):
            rows = session.execute(sa.select(Job.id, Job.status, Job.error).where(Job.id.in_(ids[start:start + 1000])))
            states.update({row.id: (row.status, row.error) for row in rows})
    return states


def status_counts(db: Database, owner: str) -> tuple[Counter, float | None]:
    """Top-level jobs of this owner by status, and the time the last of them ended (one light
    query; the children of dataset builds are not counted)."""
    import sqlalchemy as sa

    from db.models import Job

    mine = (Job.owner == owner) & Job.parent_id.is_(None)
    with db.reading() as session:
        counts = Counter(dict(session.execute(sa.select(Job.status, sa.func.count()).where(mine).group_by(Job.status)).all()))
        last = session.scalar(sa.select(sa.func.max(Job.finished_at)).where(mine))
    return counts, (last.replace(tzinfo=last.tzinfo or timezone.utc).timestamp() if last else None)


async def follow_jobs(db: Database, owner: str, m: Measurements, submit_done: asyncio.Event, deadline_s: float,
                      timeline: dict) -> None:
    """Every second, how many of the submitted jobs are queued and ended (from the database, so
    following them adds no API requests); returns once all have ended, or at the deadline
    (counted from the end of submission)."""
    deadline = None
    while True:
        await asyncio.sleep(1.0)
        counts, last_finished = await asyncio.to_thread(status_counts, db, owner)
        timeline["peak_queued"] = max(timeline.get("peak_queued", 0), counts["queued"])
        timeline["last_finished"] = last_finished
        if submit_done.is_set():
            deadline = deadline or time.monotonic() + deadline_s
            if sum(counts[s] for s in FINISHED) >= len(m.submitted) or time.monotonic() > deadline:
                return


async def loop_lag(lags_ms: list[float], stop: asyncio.Event, period_s: float = 0.005) -> None:
    """How late the load generator's own event loop wakes up: latency it adds to every measure."""
    while not stop.is_set():
        start = time.perf_counter()
        await asyncio.sleep(period_s)
        lags_ms.append((time.perf_counter() - start - period_s) * 1000)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def latency_figures(values: list[float]) -> dict[str, float]:
    return {"n": len(values), **{f"p{q}": round(percentile(values, q), 1) for q in (50, 95, 99)},
            "max": round(max(values), 1) if values else float("nan")}


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its waited-for children (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def postgres_cpu_seconds() -> float:
    """User + system CPU seconds of the PostgreSQL processes alive now (all databases: the server
    is shared, so this counts others' queries too)."""
    total = 0.0
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and (proc / "comm").read_text().strip() == "postgres":
                fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except OSError:  # it ended meanwhile
            continue
    return total


async def run_load(apis: list[str], key: str, owner: str, db: Database, args: argparse.Namespace, document_id: str,
                   processes: dict[str, int]) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {key}"}
    m = Measurements()
    lags: list[float] = []
    stop_polling, submit_done = asyncio.Event(), asyncio.Event()
    timeline: dict[str, Any] = {}
    cpu_before = {name: cpu_seconds(pid) for name, pid in processes.items()}
    postgres_before = postgres_cpu_seconds()
    client_before = resource.getrusage(resource.RUSAGE_SELF)
    started, started_wall = time.perf_counter(), time.time()
    next_index = iter(range(args.jobs))
    if args.submit_rate:
        pollers = [asyncio.create_task(paced_polls(apis, headers, args, m, stop_polling))]
    else:  # closed loops; each client keeps to one API process, spread round-robin as a load balancer would
        pollers = [asyncio.create_task(poller(apis[n % len(apis)], headers, m, stop_polling, args.poll_interval, n))
                   for n in range(args.pollers)]
    follower = asyncio.create_task(follow_jobs(db, owner, m, submit_done, args.deadline, timeline))
    lag_monitor = asyncio.create_task(loop_lag(lags, stop_polling))
    try:
        if args.submit_rate:
            await paced_submits(apis, headers, document_id, args, m)
        else:
            await asyncio.gather(*(submitter(apis[n % len(apis)], headers, document_id, next_index, args.jobs, m,
                                             args.keep_going) for n in range(args.submitters)))
        m.submit_seconds = time.perf_counter() - started
        m.submitting = False
        submit_done.set()
        await follower
    finally:
        stop_polling.set()
        await asyncio.gather(*pollers, lag_monitor, return_exceptions=True)
        follower.cancel()
    elapsed = time.perf_counter() - started
    states = job_states(db, list(m.submitted))  # each job's own final state, for lost and failed
    client_after = resource.getrusage(resource.RUSAGE_SELF)
    client_cpu = (client_after.ru_utime + client_after.ru_stime) - (client_before.ru_utime + client_before.ru_stime)
    cpu = {name: round(cpu_seconds(pid) - cpu_before[name], 1) for name, pid in processes.items()}
    cpu["load generator"] = round(client_cpu, 1)
    cpu["postgres (all databases)"] = round(postgres_cpu_seconds() - postgres_before, 1)
    last = timeline.get("last_finished")
    return {"m": m, "states": states, "elapsed": elapsed, "cpu": cpu, "lags": lags, "peak_queued": timeline.get("peak_queued", 0),
            "all_ended_s": last - started_wall if last else elapsed}


@contextmanager
def temporary_database(url: str | None) -> Iterator[str]:
    """The given database, or a fresh one on the local PostgreSQL, dropped afterwards."""
    if url:
        yield url
        return
    with scratch_postgres_database("longform_load") as url:
        yield url


def report(result: dict[str, Any], args: argparse.Namespace, fake_stats: dict[str, Any]) -> dict[str, Any]:
    m: Measurements = result["m"]
    states = result["states"]
    submit, status = latency_figures(m.submit_ms), latency_figures(m.status_ms)
    status_during = latency_figures(m.status_during_submit_ms)
    missing = [job_id for job_id in m.submitted if job_id not in states]
    unfinished = [job_id for job_id, (s, _) in states.items() if s not in FINISHED]
    by_status = Counter(s for s, _ in states.values())
    failures = Counter(f"{m.submitted[job_id]}: {(error or 'no reason')[:160]}"
                       for job_id, (s, error) in states.items() if s == "failed")
    elapsed, ended_at = result["elapsed"], result["all_ended_s"]
    lag = latency_figures(result["lags"])
    clients = (f"paced at {args.submit_rate:g} jobs/s and {args.poll_rate:g} polls/s (open loop)" if args.submit_rate
               else f"{args.submitters} closed-loop submitters and {args.pollers} pollers")
    print(f"{len(m.submitted)} of {args.jobs} jobs submitted (2xx) in {m.submit_seconds:.1f} s "
          f"({len(m.submitted) / max(m.submit_seconds, 1e-9):.1f} submits/s), {clients}; status "
          f"{status['n'] / elapsed:.1f} requests/s; peak queued {result['peak_queued']}")
    print(f"all ended {ended_at:.1f} s after the first submit ({len(states) / ended_at:.1f} jobs/s end to end); "
          f"model calls {fake_stats.get('generation_requests')}, generation tokens {fake_stats.get('generation_tokens')}")
    print(f"{'request':28s} {'n':>6s} {'p50 ms':>8s} {'p95 ms':>8s} {'p99 ms':>8s} {'max ms':>8s} {'target':>8s} {'p99/target':>10s}")
    for name, fig, target in (("submit (POST)", submit, TARGET_SUBMIT_MS), ("status (GET /v1/jobs/{id})", status, TARGET_STATUS_MS),
                              ("  status while submitting", status_during, TARGET_STATUS_MS)):
        print(f"{name:28s} {fig['n']:6d} {fig['p50']:8.1f} {fig['p95']:8.1f} {fig['p99']:8.1f} {fig['max']:8.1f} "
              f"{target:8.0f} {fig['p99'] / target:10.2f}")
    print("jobs by status: " + ", ".join(f"{s} {n}" for s, n in sorted(by_status.items()))
          + f"; by kind: " + ", ".join(f"{k} {n}" for k, n in sorted(Counter(m.submitted.values()).items())))
    if failures:
        print(f"failed jobs ({sum(failures.values())}):")
        for reason, n in failures.most_common(10):
            print(f"  {n:5d}  {reason}")
    if m.submit_errors or m.status_errors:
        print(f"submit errors {dict(m.submit_errors)}; status errors {dict(m.status_errors)}")
    print(f"lost {len(missing) + len(unfinished)} (missing {len(missing)}, not ended by the deadline {len(unfinished)})")
    schedule_kept = generator_kept_schedule(args, m, status, lag)
    if not schedule_kept:
        print(f"WARNING: the load generator did not keep its schedule ({len(m.submitted) / max(m.submit_seconds, 1e-9):.1f} "
              f"of {args.submit_rate:g} jobs/s, {status['n'] / elapsed:.1f} of {args.poll_rate:g} polls/s, its loop late "
              f"by {lag['p99']} ms at p99): the latencies above measure the generator, not the API")
    print("CPU seconds during the run: " + ", ".join(f"{name} {sec}" for name, sec in result["cpu"].items())
          + f" (of {elapsed * os.cpu_count():.0f} core-seconds); the load generator's event loop woke late by "
          f"p50 {lag['p50']} ms, p99 {lag['p99']} ms, max {lag['max']} ms (included in the latencies above)")
    return {
        "jobs": len(m.submitted),
        "p99_submit_ms": submit["p99"],
        "p99_status_ms": status["p99"],
        "lost": len(missing) + len(unfinished),
        "failed": by_status["failed"],
        "submit_errors": sum(m.submit_errors.values()),
        "status_errors": sum(m.status_errors.values()),
        "p50_submit_ms": submit["p50"], "p95_submit_ms": submit["p95"],
        "p50_status_ms": status["p50"], "p95_status_ms": status["p95"],
        "submit_ratio": round(submit["p99"] / TARGET_SUBMIT_MS, 2),
        "status_ratio": round(status["p99"] / TARGET_STATUS_MS, 2),
        "submits_per_s": round(len(m.submitted) / max(m.submit_seconds, 1e-9), 1),
        "status_per_s": round(status["n"] / elapsed, 1),
        "all_ended_s": round(ended_at, 1),
        "peak_queued": result.get("peak_queued", 0),
        "cpu_s": result["cpu"],
        "client_loop_lag_p99_ms": lag["p99"],
        "worker_nice": args.worker_nice,
        "load": "open" if args.submit_rate else "closed",
        "schedule_kept": schedule_kept,
    }


def generator_kept_schedule(args: argparse.Namespace, m: Measurements, status: dict[str, float],
                            lag: dict[str, float]) -> bool:
    """Whether an open-loop run sent what it was asked to, on time: the achieved rates within 5 %
    of the asked ones and its own event loop late by under a tenth of the status target at p99.
    (Closed loops have no schedule to keep.)"""
    if not args.submit_rate:
        return True
    submits_per_s = len(m.submitted) / max(m.submit_seconds, 1e-9)
    polls_per_s = len(m.status_during_submit_ms) / max(m.submit_seconds, 1e-9)
    return (submits_per_s >= 0.95 * args.submit_rate and polls_per_s >= 0.95 * args.poll_rate
            and lag["p99"] < TARGET_STATUS_MS / 10)


def upload_document(api: str, key: str) -> str:
    upload = httpx.post(f"{api}/v1/documents", params={"name": "load.txt"}, content=DOCUMENT.encode(),
                        headers={"Authorization": f"Bearer {key}", "Content-Type": "text/plain"}, timeout=30)
    upload.raise_for_status()
    return upload.json()["id"]


def warm_up(apis: list[str], db: Database, rounds: int, timeout_s: float = 120) -> None:
    """A few rounds of the job mix under a key of their own, waited for before the clock starts:
    a worker imports each kind's code and loads the tokenizer on its first jobs, and an API
    process connects to the broker on its first submit. The figures are of the steady state."""
    with db.session() as s:
        key, row = repo.create_api_key(s, "load-warm-up")
    document_id = upload_document(apis[0], key)
    count = 0
    for api in apis:
        with httpx.Client(base_url=api, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
            for index in range(rounds * MIX_SIZE):
                _, path, body = job_request(index, document_id)
                client.post(path, json=body).raise_for_status()
                count += 1
    deadline = time.monotonic() + timeout_s
    while sum(status_counts(db, row.id)[0][s] for s in FINISHED) < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"the {count} warm-up jobs did not end within {timeout_s:.0f} s")
        time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--submit-rate", type=float, default=25,
                        help="jobs a second, sent on schedule whatever the answers (open loop); 0: closed loops "
                             "that submit back to back (the API's saturation)")
    parser.add_argument("--poll-rate", type=float, default=100, help="status polls a second with --submit-rate")
    parser.add_argument("--submitters", type=int, default=4, help="concurrent submitting clients")
    parser.add_argument("--pollers", type=int, default=4, help="concurrent clients polling job status")
    parser.add_argument("--poll-interval", type=float, default=0.02, help="seconds each poller waits between polls")
    parser.add_argument("--database-url", help="default: a new database on the local PostgreSQL, dropped after")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL, help="the broker; this Redis db is flushed")
    parser.add_argument("--api-processes", type=int, default=1, help="`longform serve` replicas (clients spread over them)")
    parser.add_argument("--worker-concurrency", type=int, default=128, help="jobs at once per worker process (WORKER_CONCURRENCY's default)")
    parser.add_argument("--worker-nice", type=int, default=10,
                        help="WORKER_NICE of the workers (10: the API, on the same cores, goes first)")
    parser.add_argument("--warm-up-rounds", type=int, default=3, help="rounds of the job mix run before the clock starts")
    parser.add_argument("--deadline", type=float, default=420, help="seconds after the last submit for every job to end")
    parser.add_argument("--keep-going", action="store_true", help="count failed submits and go on instead of stopping")
    args = parser.parse_args()
    # A stopped run (timeout, kill) still stops the API, the workers and the fake server it
    # started: workers left behind would take the next run's tasks from the same Redis db.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    import redis

    redis.Redis.from_url(args.redis_url).flushdb()
    with ExitStack() as stack:
        url = stack.enter_context(temporary_database(args.database_url))
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="longform-load-")))
        upgrade(url)
        db = Database(url)
        with db.session() as s:
            key, key_row = repo.create_api_key(s, f"load-{uuid.uuid4().hex[:6]}")
            owner = key_row.id
        fake = stack.enter_context(start_fake_server(**FAKE_CONFIG))
        env = {"DATABASE_URL": url, "BROKER_URL": args.redis_url, "LLM_ENDPOINTS": fake.base_url,
               "LONGFORM_DATA_DIR": str(tmp), "REQUIRE_API_KEYS": "always",
               "WORKER_CONCURRENCY": str(args.worker_concurrency), "WORKER_NICE": str(args.worker_nice)}
        api_procs, apis = [], []
        for n in range(1, args.api_processes + 1):
            api_proc, api = start_serve(env, tmp, f"api-{n}")
            stack.callback(api_proc.stop)
            api_procs.append(api_proc)
            apis.append(api)
        workers: list[LongformProcess] = []
        for n in (1, 2):
            workers.append(start_worker(env, tmp, f"worker-{n}", concurrency=args.worker_concurrency))
            stack.callback(workers[-1].stop)
        document_id = upload_document(apis[0], key)
        warm_up(apis, db, args.warm_up_rounds)
        fake.reset()
        processes = {**{f"api-{n}": p.proc.pid for n, p in enumerate(api_procs, 1)}, "fake server": fake.pid,
                     **{f"worker-{n}": w.proc.pid for n, w in enumerate(workers, 1)}}
        result = asyncio.run(run_load(apis, key, owner, db, args, document_id, processes))
        figures = report(result, args, fake.stats())
        redis.Redis.from_url(args.redis_url).flushdb()
    print(json.dumps(figures))
    if figures["lost"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
