"""Crash tests: SIGKILL the process running a multi-step job; after a restart the job
finishes and no step that had succeeded is called again (counted at the fake server)."""
from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from db import repo
from db.session import Database
from tests.db_fixtures import *  # noqa: F401,F403
from tests.db_fixtures import sqlite_url
from tests.api_server import wait_until
from tests.processes import start_serve, start_worker

BOOK = Path(__file__).resolve().parent / "data" / "pride_and_prejudice.txt"
REDIS_TEST_URL = "redis://127.0.0.1:6379/14"

pytestmark = pytest.mark.slow


def write_job(client: httpx.Client) -> tuple[str, int]:
    params = {"instruction": "Write a long history of the Roman Empire in 20 sections.", "target_words": 10000}
    job = client.post("/v1/jobs", json={"kind": "write", "params": params}).json()
    return job["id"], 6  # kill once 6 sections are written


def summarize_job(client: httpx.Client) -> tuple[str, int]:
    text = BOOK.read_text(encoding="utf-8")
    doc = client.post("/v1/documents", content=text.encode(), headers={"Content-Type": "text/plain"},
                      params={"strip_gutenberg": "true"}).json()
    job = client.post("/v1/jobs", json={"kind": "summarize", "params": {"document_id": doc["id"], "target_words": 500}}).json()
    return job["id"], 20  # kill in the middle of level 0


def succeeded_steps(db: Database, job_id: str) -> dict[str, int]:
    with db.session() as s:
        return {st.key: st.calls for st in repo.list_steps(s, job_id) if st.status == "succeeded"}




def finish_after_restart(client: httpx.Client, job_id: str) -> dict:
    return wait_until(
        lambda: (j := client.get(f"/v1/jobs/{job_id}").json())["status"] in ("succeeded", "failed", "cancelled") and j,
        240, "the job to finish after the restart",
    )


def assert_resumed_without_repeats(
    final: dict, db: Database, job_id: str, done_before: dict[str, int], fake, restarted_at: float
) -> None:
    """Every model call after the restart belongs to a step that had not succeeded before the crash.

    Requests the killed process had in flight are logged by the fake server when it notices
    the disconnect, so only requests that arrived after the restart are counted."""
    assert final["status"] == "succeeded", final
    assert final["runs"] == 2
    done_after = succeeded_steps(db, job_id)
    assert set(done_before) < set(done_after)
    new_calls = sum(calls for key, calls in done_after.items() if key not in done_before)
    requests = [r for r in fake.requests() if r["path"].endswith("completions") and r["time"] >= restarted_at]
    assert len(requests) == new_calls


@pytest.mark.parametrize("make_job", [write_job, summarize_job], ids=["write", "summarize"])
def test_embedded_process_crash(make_job, tmp_path, fake_llm_factory):
    fake = fake_llm_factory(timing=True, max_num_seqs=8, decode_s_per_token=0.002)
    url = sqlite_url(tmp_path)
    db = Database(url)
    env = {"DATABASE_URL": url, "LLM_ENDPOINTS": fake.base_url, "JOB_LEASE_SECONDS": "2", "LONGFORM_DATA_DIR": str(tmp_path)}
    first, api_url = start_serve(env, tmp_path, "first")
    try:
        with httpx.Client(base_url=api_url, timeout=30) as client:
            job_id, kill_after = make_job(client)
            wait_until(lambda: len(succeeded_steps(db, job_id)) >= kill_after, 120, "steps before the crash")
    finally:
        first.kill()
    done_before = succeeded_steps(db, job_id)
    restarted_at = time.time()
    second, api_url = start_serve(env, tmp_path, "second")
    try:
        with httpx.Client(base_url=api_url, timeout=30) as client:
            final = finish_after_restart(client, job_id)
    finally:
        second.stop()
    assert_resumed_without_repeats(final, db, job_id, done_before, fake, restarted_at)


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.parametrize("make_job", [write_job, summarize_job], ids=["write", "summarize"])
def test_celery_worker_crash(make_job, tmp_path, fake_llm_factory, postgres_url):
    import redis

    redis.Redis.from_url(REDIS_TEST_URL).flushdb()
    fake = fake_llm_factory(timing=True, max_num_seqs=8, decode_s_per_token=0.002)
    env = {
        "DATABASE_URL": postgres_url, "BROKER_URL": REDIS_TEST_URL, "LLM_ENDPOINTS": fake.base_url,
        "JOB_LEASE_SECONDS": "2", "LONGFORM_DATA_DIR": str(tmp_path), "REQUIRE_API_KEYS": "auto",
    }
    db = Database(postgres_url)
    with db.session() as s:
        key, _ = repo.create_api_key(s, "crash-test", is_admin=True)
    api, api_url = start_serve(env, tmp_path, "api")
    try:
        with httpx.Client(base_url=api_url, timeout=30, headers={"Authorization": f"Bearer {key}"}) as client:
            job_id, kill_after = make_job(client)
            worker = start_worker(env, tmp_path, "worker-1")
            try:
                wait_until(lambda: len(succeeded_steps(db, job_id)) >= kill_after, 120, "steps before the crash")
            finally:
                worker.kill()
            done_before = succeeded_steps(db, job_id)
            restarted_at = time.time()
            worker = start_worker(env, tmp_path, "worker-2")
            try:
                final = finish_after_restart(client, job_id)
            finally:
                worker.stop()
    finally:
        api.stop()
    assert_resumed_without_repeats(final, db, job_id, done_before, fake, restarted_at)
