"""The per-request work of the API's hot paths (submit, status) kept small without changing
what they answer: key checks that only read, status without the lookups a job cannot need
yet, reads without transaction round trips on PostgreSQL (bench/load.py measures them)."""
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text, update

from agents.settings import Settings
from db import repo
from db.models import ApiKey, Job, Step
from db.session import Database
from tests.db_fixtures import *  # noqa: F401,F403


@pytest.fixture
def keyed_client(database_url, tmp_path):
    settings = Settings(longform_data_dir=str(tmp_path), database_url=database_url, require_api_keys="always")
    db = Database(database_url)
    with db.session() as s:
        key, row = repo.create_api_key(s, "alice")
    from api.app import create_app

    with TestClient(create_app(settings, run_worker=False), headers={"Authorization": f"Bearer {key}"}) as client:
        yield client, db, row.id


def last_used(db, key_id):
    with db.reading() as s:
        return s.get(ApiKey, key_id).last_used_at


def test_a_key_records_its_use_at_most_once_a_minute_and_a_revoked_key_is_refused_at_once(keyed_client):
    client, db, key_id = keyed_client
    assert last_used(db, key_id) is None
    assert client.get("/v1/jobs").status_code == 200
    first = last_used(db, key_id)
    assert first is not None
    assert client.get("/v1/jobs").status_code == 200
    assert last_used(db, key_id) == first  # within the minute: no write
    with db.session() as s:
        s.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=repo.utcnow() - timedelta(minutes=2)))
    assert client.get("/v1/jobs").status_code == 200
    assert repo._aware(last_used(db, key_id)) > repo.utcnow() - timedelta(minutes=1)
    with db.session() as s:
        repo.revoke_api_key(s, key_id)
    assert client.get("/v1/jobs").status_code == 401


def test_status_shows_the_usage_and_scores_a_job_has(keyed_client):
    client, db, key_id = keyed_client
    with db.session() as s:
        job, _ = repo.create_job(s, "chat", {"messages": [{"role": "user", "content": "hi"}]}, owner=key_id)
    queued = client.get(f"/v1/jobs/{job.id}").json()
    assert queued["usage"]["calls"] == 0 and queued["scores"] == {}
    with db.session() as s:  # as a worker would leave it: one run, one step, a success with a score
        s.execute(update(Job).where(Job.id == job.id).values(runs=1, status="succeeded", result={"text": "hello"}))
        s.add(Step(job_id=job.id, key="chat", status="succeeded", calls=2, prompt_tokens=10, completion_tokens=5))
        repo.put_score(s, job.id, "S_l", 90.0)
    done = client.get(f"/v1/jobs/{job.id}").json()
    assert done["usage"]["calls"] == 2 and done["budget"]["tokens"] == 15
    assert done["scores"] == {"S_l": 90.0}


@pytest.mark.postgres
def test_reads_on_postgresql_run_each_statement_on_its_own(postgres_url):
    """No BEGIN and ROLLBACK around a read: each statement is its own transaction (under READ
    COMMITTED each takes its own snapshot anyway), which saves two round trips per read."""
    db = Database(postgres_url)
    with db.reading() as s:
        s.execute(text("SELECT pg_sleep(0.01)"))
        assert s.execute(text("SELECT now() = statement_timestamp()")).scalar() is True
    with db.session() as s:  # writes keep their transaction
        s.execute(text("SELECT pg_sleep(0.01)"))
        assert s.execute(text("SELECT now() = statement_timestamp()")).scalar() is False
