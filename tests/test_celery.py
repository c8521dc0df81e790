"""Production mode end to end: API with a Redis broker, a real Celery worker process, PostgreSQL."""
import httpx
import pytest

from db import repo
from db.session import Database
from tests.api_server import wait_for_job
from tests.db_fixtures import *  # noqa: F401,F403
from tests.processes import start_serve, start_worker

REDIS_TEST_URL = "redis://127.0.0.1:6379/13"

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]


def test_a_celery_worker_runs_jobs_by_priority(tmp_path, fake_llm, postgres_url):
    import redis

    redis.Redis.from_url(REDIS_TEST_URL).flushdb()
    env = {"DATABASE_URL": postgres_url, "BROKER_URL": REDIS_TEST_URL, "LLM_ENDPOINTS": fake_llm.base_url,
           "LONGFORM_DATA_DIR": str(tmp_path)}
    with Database(postgres_url).session() as s:
        key, _ = repo.create_api_key(s, "celery-test")
    api, url = start_serve(env, tmp_path, "api")
    worker = None
    try:
        with httpx.Client(base_url=url, timeout=30, headers={"Authorization": f"Bearer {key}"}) as client:
            ready = client.get("/readyz").json()
            assert ready["checks"]["broker"] == {"ok": True, "mode": "celery"}
            body = {"kind": "chat", "params": {"messages": [{"role": "user", "content": "Write about 30 words."}]}}
            job_ids = [client.post("/v1/jobs", json=body | {"priority": p}).json()["id"] for p in (9, 0)]
            worker = start_worker(env, tmp_path, concurrency=1)
            jobs = [wait_for_job(client, job_id, timeout=60) for job_id in job_ids]
            assert all(j["status"] == "succeeded" and j["result"]["text"] for j in jobs)
            low, high = jobs
            assert high["started_at"] <= low["started_at"]  # priority 0 is served first
    finally:
        if worker:
            worker.stop()
        api.stop()
