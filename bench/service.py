"""Shared parts of the service benchmarks (bench/dataset_build.py, bench/selflengthen_build.py):
the fake server in vLLM timing mode, the real service on it (`longform serve`: REST, SQLite,
the embedded worker), one job followed to its end, and what the fake server produced during
it against its capacity.

Utilization = generation tokens the fake server produced / (elapsed time x its capacity),
where capacity is max_num_seqs / decode_s_per_token: every decode slot busy all the time.
"""
from __future__ import annotations

import contextlib
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from db.schema import upgrade  # noqa: E402
from fakellm.runner import FakeServer, start_fake_server  # noqa: E402
from tests.processes import start_serve  # noqa: E402

POSTGRES_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@contextlib.contextmanager
def scratch_postgres_database(prefix: str) -> Iterator[str]:
    """A new database on the local PostgreSQL (named PREFIX_<random>), dropped on exit."""
    import uuid

    import sqlalchemy as sa

    from db.session import engine_for, normalize_url

    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(POSTGRES_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = POSTGRES_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        engine_for(normalize_url(url)).dispose()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


# As recommended for vLLM in the README: --scheduling-policy priority, LLM_PRIORITY_SCHEDULING=1.
# Time to first token: one decode step (vLLM prefills a new sequence within the next scheduler
# step, as bench/llm_pool.py assumes too); prompt tokens missing from the prefix cache still
# cost prefill time per token.
TIMING = dict(timing=True, max_num_seqs=64, decode_s_per_token=0.002, ttft_s=0.002,
              max_model_len=32768, scheduling_policy="priority")
FINISHED = ("succeeded", "failed", "cancelled")


@contextlib.contextmanager
def timed_service(name: str, worker_concurrency: int, max_inflight: int = 128,
                  **fake_config: Any) -> Iterator[tuple[FakeServer, httpx.Client]]:
    """(the fake server, an API client of `longform serve` on it with at most `max_inflight`
    requests at the server, LLM_MAX_INFLIGHT); both stopped on exit."""
    with start_fake_server(**{**TIMING, **fake_config}) as fake, tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        upgrade(url)
        env = {"DATABASE_URL": url, "LLM_ENDPOINTS": fake.base_url, "LONGFORM_DATA_DIR": tmp,
               "LLM_MAX_INFLIGHT": str(max_inflight), "LLM_PRIORITY_SCHEDULING": "1", "WORKER_CONCURRENCY": str(worker_concurrency)}
        proc, api = start_serve(env, Path(tmp), name)
        try:
            with httpx.Client(base_url=api, timeout=60) as client:
                yield fake, client
        finally:
            proc.stop()


def run_timed(fake: FakeServer, client: httpx.Client, path: str, body: dict[str, Any],
              poll_s: float = 0.1) -> tuple[dict[str, Any], float, dict[str, Any]]:
    """Submit `body` to `path` with the fake server's counters reset, follow the job to its end:
    (the job, seconds from submit to its end, the fake server's stats)."""
    fake.reset()
    start = time.perf_counter()
    job = client.post(path, json=body)
    job.raise_for_status()
    job_id = job.json()["id"]
    while True:
        state = client.get(f"/v1/jobs/{job_id}").json()
        if state["status"] in FINISHED:
            break
        time.sleep(poll_s)
    elapsed = time.perf_counter() - start
    return state, elapsed, fake.stats()


def utilization(stats: dict[str, Any], elapsed: float) -> dict[str, Any]:
    """The generation figures of a timed run: utilization of the server's capacity and the rest."""
    tokens_per_s = stats["generation_tokens"] / elapsed
    capacity = stats["capacity_tokens_per_s"]
    return {
        "utilization": round(tokens_per_s / capacity, 4),
        "prefix_hit_ratio": round(stats["prefix_cache_hits"] / max(1, stats["prefix_cache_queries"]), 4),
        "tokens_per_s": round(tokens_per_s, 1),
        "capacity_tokens_per_s": capacity,
        "seconds": round(elapsed, 2),
        "model_calls": stats["generation_requests"],
        "generation_tokens": stats["generation_tokens"],
        "prompt_tokens": stats["prompt_tokens"],
        "max_running_observed": stats["max_running_observed"],
    }
