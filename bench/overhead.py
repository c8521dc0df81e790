"""Service overhead: 500 `chat` jobs against a zero-latency fake model, submitted over REST,
run by one worker process, in embedded mode (SQLite, in-process worker) and in production
mode (PostgreSQL, Redis, one Celery worker process).

Prints jobs per second end to end and the median cost of one step checkpoint: the database
time of writing a step's output, which the worker commits in batches (group commit), so one
checkpoint costs its batch's transaction time over the batch's size. The write of a step's
running row is shown beside it, and so is how long a step waits for its checkpoint from
asking to commit, queueing behind the burst of other jobs included.
Targets on a 2-core machine: >= 50 jobs/s and a median checkpoint under 5 ms in both modes.
Last line: {"embedded": {"jobs_per_s": ..., "checkpoint_ms_p50": ...}, "celery_postgres": {...}}

Run: .venv/bin/python bench/overhead.py [--jobs 500] [--mode embedded|celery_postgres]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.service import scratch_postgres_database  # noqa: E402
from db import repo  # noqa: E402
from db.schema import upgrade  # noqa: E402
from db.session import Database  # noqa: E402
from fakellm.runner import start_fake_server  # noqa: E402
from tests.api_server import free_port  # noqa: E402
from tests.processes import start_serve, start_worker  # noqa: E402

REDIS_URL = "redis://127.0.0.1:6379/12"


async def submit_all(url: str, headers: dict, count: int, concurrency: int = 32) -> list[str]:
    body = {"kind": "chat", "params": {"messages": [{"role": "user", "content": "Reply in about 10 words."}], "max_tokens": 32}}
    ids: list[str] = []
    queue = asyncio.Queue()
    for _ in range(count):
        queue.put_nowait(None)

    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as client:
        async def submitter():
            while not queue.empty():
                queue.get_nowait()
                response = await client.post("/v1/jobs", json=body)
                response.raise_for_status()
                ids.append(response.json()["id"])

        await asyncio.gather(*(submitter() for _ in range(concurrency)))
    return ids


def wait_all_finished(url: str, headers: dict, count: int, timeout: float = 300) -> dict[str, int]:
    """Poll until every job has ended (one light query per poll, so the load generator
    does not compete much with the service it measures); then count outcomes."""
    deadline = time.monotonic() + timeout
    ended = "succeeded,failed,cancelled"
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        while time.monotonic() < deadline:
            if client.get("/v1/jobs", params={"status": ended, "limit": 1}).json()["total"] >= count:
                return {s: client.get("/v1/jobs", params={"status": s, "limit": 1}).json()["total"] for s in ended.split(",")}
            time.sleep(0.05)
    raise TimeoutError("jobs did not finish")


def histogram_p50(metrics_text: str, name: str, phase: str) -> float:
    """Median (ms) from a Prometheus histogram, interpolated within the bucket that holds it."""
    buckets = []
    for line in metrics_text.splitlines():
        if line.startswith(f"{name}_bucket") and f'phase="{phase}"' in line:
            le = line.split('le="')[1].split('"')[0]
            buckets.append((float("inf") if le == "+Inf" else float(le), float(line.rsplit(" ", 1)[1])))
    buckets.sort()
    total = buckets[-1][1]
    if total == 0:
        return float("nan")
    half, prev_le, prev_count = total / 2, 0.0, 0.0
    for le, count in buckets:
        if count >= half:
            if le == float("inf"):
                return prev_le * 1000
            fraction = (half - prev_count) / max(count - prev_count, 1e-9)
            return (prev_le + (le - prev_le) * fraction) * 1000
        prev_le, prev_count = le, count
    return float("nan")


def measure(url: str, headers: dict, metrics_url: str, count: int) -> dict:
    start = time.perf_counter()
    asyncio.run(submit_all(url, headers, count))
    submitted = time.perf_counter() - start
    done = wait_all_finished(url, headers, count)
    elapsed = time.perf_counter() - start
    metrics = httpx.get(metrics_url, headers=headers, timeout=10).text
    name = "longform_step_checkpoint_seconds"
    return {
        "jobs": count,
        "succeeded": done["succeeded"],
        "seconds": round(elapsed, 2),
        "submit_seconds": round(submitted, 2),
        "jobs_per_s": round(done["succeeded"] / elapsed, 1),
        "checkpoint_ms_p50": round(histogram_p50(metrics, name, "finish"), 2),
        "step_start_ms_p50": round(histogram_p50(metrics, name, "start"), 2),
        "checkpoint_wait_ms_p50": round(histogram_p50(metrics, "longform_step_checkpoint_wait_seconds", "finish"), 2),
    }


def run_embedded(fake_url: str, count: int, tmp: Path) -> dict:
    url = f"sqlite:///{tmp / 'embedded.db'}"
    upgrade(url)
    env = {"DATABASE_URL": url, "LLM_ENDPOINTS": fake_url, "LONGFORM_DATA_DIR": str(tmp)}
    proc, api = start_serve(env, tmp, "embedded")
    try:
        return measure(api, {}, f"{api}/metrics", count)
    finally:
        proc.stop()


def run_celery(fake_url: str, count: int, tmp: Path) -> dict:
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()
    with scratch_postgres_database("longform_bench") as url:
        upgrade(url)
        with Database(url).session() as s:
            key, _ = repo.create_api_key(s, "bench", is_admin=True)
        metrics_port = free_port()
        env = {"DATABASE_URL": url, "BROKER_URL": REDIS_URL, "LLM_ENDPOINTS": fake_url, "LONGFORM_DATA_DIR": str(tmp),
               "WORKER_METRICS_PORT": str(metrics_port)}
        api_proc, api = start_serve(env, tmp, "celery-api")
        worker = start_worker(env, tmp, "celery-worker", concurrency=64)
        try:
            return measure(api, {"Authorization": f"Bearer {key}"}, f"http://127.0.0.1:{metrics_port}/metrics", count)
        finally:
            worker.stop()
            api_proc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--mode", choices=("embedded", "celery_postgres"), action="append",
                        help="run only this mode (repeatable; default: both)")
    args = parser.parse_args()
    modes = args.mode or ["embedded", "celery_postgres"]
    results = {}
    with start_fake_server() as fake, tempfile.TemporaryDirectory() as tmp:
        for mode, runner in (("embedded", run_embedded), ("celery_postgres", run_celery)):
            if mode not in modes:
                continue
            results[mode] = runner(fake.base_url, args.jobs, Path(tmp))
            r = results[mode]
            print(f"{mode:16s} {r['succeeded']}/{r['jobs']} jobs in {r['seconds']} s: {r['jobs_per_s']} jobs/s "
                  f"(target >= 50, ratio {r['jobs_per_s'] / 50:.2f}); checkpoint p50 {r['checkpoint_ms_p50']} ms "
                  f"(target < 5), step start p50 {r['step_start_ms_p50']} ms; a step waits p50 {r['checkpoint_wait_ms_p50']} ms "
                  f"for its checkpoint (queueing included)")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
