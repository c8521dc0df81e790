"""Deleting jobs, documents and datasets (DELETE endpoints, key rules, refusal while active),
retention (RETENTION_DAYS purge) and the CLI's `delete`, `dataset delete` and `purge`.

Rows are written straight into the database (no worker runs), so every status is exact."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest

from agents.settings import Settings
from db import deletion, repo
from db.models import Document, Job, JobEvent, Score, Step
from db.session import Database
from tests.api_server import running_api, wait_until
from tests.db_fixtures import *  # noqa: F401,F403  (database_url)
from tests.test_cli import clean_env, run  # noqa: F401  (autouse fixture)
from workers.retention import RetentionTimer


@pytest.fixture
def settings(tmp_path, database_url, fake_llm):
    return Settings(longform_data_dir=str(tmp_path), database_url=database_url, llm_endpoints=fake_llm.base_url,
                    require_api_keys="always")


@pytest.fixture
def keys(settings):
    with Database(settings.database_url).session() as s:
        alice, alice_row = repo.create_api_key(s, "alice")
        bob, _ = repo.create_api_key(s, "bob")
        admin, _ = repo.create_api_key(s, "ops", is_admin=True)
        return {"alice": alice, "bob": bob, "admin": admin, "alice_owner": alice_row.id}


@pytest.fixture
def server(settings, keys):
    with running_api(settings, run_worker=False) as url:
        yield url


def client(url: str, key: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def add_job(settings, owner: str, *, status: str = "succeeded", kind: str = "chat", parent_id: str | None = None,
            params: dict | None = None, finished_days_ago: float | None = 0.0, files: bool = False) -> str:
    now = datetime.now(timezone.utc)
    with Database(settings.database_url).session() as s:
        job = Job(kind=kind, status=status, owner=owner, parent_id=parent_id, params=params or {},
                  idempotency_key=None,
                  finished_at=None if finished_days_ago is None or status in ("queued", "running")
                  else now - timedelta(days=finished_days_ago))
        s.add(job)
        s.flush()
        s.add(Step(job_id=job.id, key="chat", status="succeeded", output={"text": "x"}))
        s.add(JobEvent(job_id=job.id, type="status", data={"status": status}))
        s.add(Score(job_id=job.id, metric="S_l", value=90.0))
        job_id = job.id
    if files:
        out = Path(settings.longform_data_dir) / "datasets" / job_id
        out.mkdir(parents=True)
        (out / "longwriter.jsonl").write_text("{}\n")
    return job_id


def rows(settings, job_ids: list[str]) -> int:
    with Database(settings.database_url).reading() as s:
        total = s.query(Job).filter(Job.id.in_(job_ids)).count()
        for model in (Step, JobEvent, Score):
            total += s.query(model).filter(model.job_id.in_(job_ids)).count()
        return total


def test_delete_a_finished_job_with_children_steps_events_and_files(server, settings, keys):
    owner = keys["alice_owner"]
    parent = add_job(settings, owner, kind="dataset", files=True)
    child = add_job(settings, owner, parent_id=parent, status="failed")
    grandchild = add_job(settings, owner, parent_id=child, status="cancelled", files=True)
    other = add_job(settings, owner)
    ids = [parent, child, grandchild]
    assert rows(settings, ids) == 12
    with client(server, keys["alice"]) as a:
        answer = a.delete(f"/v1/jobs/{parent}")
        assert answer.status_code == 204, answer.text
        assert a.get(f"/v1/jobs/{parent}").status_code == 404
        assert a.get(f"/v1/jobs/{child}").status_code == 404
        assert a.delete(f"/v1/jobs/{parent}").status_code == 404  # already gone
    assert rows(settings, ids) == 0 and rows(settings, [other]) == 4
    datasets = Path(settings.longform_data_dir) / "datasets"
    assert not (datasets / parent).exists() and not (datasets / grandchild).exists()


def test_delete_is_refused_while_the_job_or_a_child_is_queued_or_running(server, settings, keys):
    owner = keys["alice_owner"]
    queued = add_job(settings, owner, status="queued")
    parent = add_job(settings, owner, kind="dataset", status="cancelled")
    running_child = add_job(settings, owner, parent_id=parent, status="running")
    busy = add_job(settings, owner, kind="dataset", status="running")
    finished_child = add_job(settings, owner, parent_id=busy, status="succeeded")
    with client(server, keys["alice"]) as a:
        for job_id, where in ((queued, "is queued"), (parent, f"child job {running_child} is running"),
                              (finished_child, f"job {busy}, which is running")):
            answer = a.delete(f"/v1/jobs/{job_id}")
            assert answer.status_code == 409, answer.text
            assert where in answer.json()["detail"] and "cancel" in answer.json()["detail"]
    assert rows(settings, [queued, parent, running_child, busy, finished_child]) == 20


def test_another_key_gets_404_and_the_admin_may_delete(server, settings, keys):
    job_id = add_job(settings, keys["alice_owner"])
    with client(server, keys["bob"]) as b:
        assert b.delete(f"/v1/jobs/{job_id}").status_code == 404
        assert b.delete(f"/v1/datasets/{job_id}").status_code == 404
    assert rows(settings, [job_id]) == 4
    with client(server, keys["admin"]) as root:
        assert root.delete(f"/v1/jobs/{job_id}").status_code == 204
    assert rows(settings, [job_id]) == 0
    assert httpx.delete(f"{server}/v1/jobs/{job_id}").status_code == 401


def test_idempotency_key_of_a_deleted_job_makes_a_new_job(server, settings, keys):
    body = {"kind": "chat", "params": {"messages": [{"role": "user", "content": "hi"}]}}
    with client(server, keys["alice"]) as a:
        first = a.post("/v1/jobs", json=body, headers={"Idempotency-Key": "k1"}).json()["id"]
        assert a.delete(f"/v1/jobs/{first}").status_code == 409  # queued (no worker here)
        assert a.post(f"/v1/jobs/{first}/cancel").status_code == 200
        assert a.delete(f"/v1/jobs/{first}").status_code == 204
        again = a.post("/v1/jobs", json=body, headers={"Idempotency-Key": "k1"})
        assert again.status_code == 202 and again.json()["id"] != first


def test_document_delete_and_refusal_while_a_job_uses_it(server, settings, keys):
    with client(server, keys["alice"]) as a, client(server, keys["bob"]) as b:
        doc_id = a.post("/v1/documents", content=b"A short text to summarize.",
                        headers={"Content-Type": "text/plain"}).json()["id"]
        user = add_job(settings, keys["alice_owner"], kind="summarize", status="running",
                       params={"document_id": doc_id})
        assert b.delete(f"/v1/documents/{doc_id}").status_code == 404
        refused = a.delete(f"/v1/documents/{doc_id}")
        assert refused.status_code == 409 and user in refused.json()["detail"]
        with Database(settings.database_url).session() as s:
            s.get(Job, user).status = "succeeded"
        assert a.delete(f"/v1/documents/{doc_id}").status_code == 204
        assert a.get(f"/v1/documents/{doc_id}").status_code == 404
        assert a.delete(f"/v1/documents/{doc_id}").status_code == 404
    with Database(settings.database_url).reading() as s:
        assert s.get(Document, doc_id) is None and s.get(Job, user) is not None  # the finished job stays


def test_dataset_delete_removes_its_children_and_export_dir(server, settings, keys):
    owner = keys["alice_owner"]
    dataset = add_job(settings, owner, kind="dataset", files=True)
    children = [add_job(settings, owner, kind="write", parent_id=dataset) for _ in range(3)]
    chat = add_job(settings, owner)
    with client(server, keys["alice"]) as a:
        assert a.delete(f"/v1/datasets/{chat}").status_code == 404  # not a dataset
        assert a.delete(f"/v1/datasets/{dataset}").status_code == 204
        assert a.get(f"/v1/datasets/{dataset}").status_code == 404
    assert rows(settings, [dataset, *children]) == 0 and rows(settings, [chat]) == 4
    assert not (Path(settings.longform_data_dir) / "datasets" / dataset).exists()


def test_retention_purges_only_old_finished_top_level_jobs(settings, keys):
    owner = keys["alice_owner"]
    old = add_job(settings, owner, kind="dataset", status="failed", finished_days_ago=40, files=True)
    old_child = add_job(settings, owner, parent_id=old, finished_days_ago=41)
    recent = add_job(settings, owner, finished_days_ago=2)
    old_orphan_parent = add_job(settings, owner, kind="dataset", status="running", finished_days_ago=None)
    old_child_of_running = add_job(settings, owner, parent_id=old_orphan_parent, finished_days_ago=50)
    queued = add_job(settings, owner, status="queued", finished_days_ago=None)
    kept_busy = add_job(settings, owner, kind="dataset", status="succeeded", finished_days_ago=60)
    busy_child = add_job(settings, owner, parent_id=kept_busy, status="queued")  # re-queued by a retry

    settings.retention_days = 30
    timer = RetentionTimer()
    db = Database(settings.database_url)
    purged = timer.maybe_purge(db, settings)
    assert purged == [old]
    assert rows(settings, [old, old_child]) == 0
    assert not (Path(settings.longform_data_dir) / "datasets" / old).exists()
    assert rows(settings, [recent, old_orphan_parent, old_child_of_running, queued, kept_busy, busy_child]) == 24
    assert timer.maybe_purge(db, settings) == []  # not due again for 10 minutes
    settings.retention_days = 0
    assert not RetentionTimer().due(settings)  # 0: keep forever
    assert deletion.purge(db, settings.longform_data_dir, 1) == [recent]


def test_purge_endpoint_is_for_admins(server, settings, keys):
    old = add_job(settings, keys["alice_owner"], finished_days_ago=10)
    with client(server, keys["alice"]) as a, client(server, keys["admin"]) as root:
        assert a.post("/v1/purge", params={"older_than_days": 5}).status_code == 403
        assert root.post("/v1/purge").status_code == 422  # RETENTION_DAYS 0 and no age given
        answer = root.post("/v1/purge", params={"older_than_days": 5})
        assert answer.status_code == 200 and answer.json()["purged"] == [old]
    assert rows(settings, [old]) == 0


def test_cli_delete_dataset_delete_and_purge(server, settings, keys):
    owner = keys["alice_owner"]
    job_id = add_job(settings, owner)
    running = add_job(settings, owner, status="running")
    dataset = add_job(settings, owner, kind="dataset", files=True)
    old = add_job(settings, owner, finished_days_ago=10)
    with client(server, keys["alice"]) as a:
        doc_id = a.post("/v1/documents", content=b"Some text.", headers={"Content-Type": "text/plain"}).json()["id"]
    env = {"LONGFORM_URL": server, "LONGFORM_API_KEY": keys["alice"]}

    deleted = run(["delete", job_id, f"doc:{doc_id}"], **env)
    assert deleted.exit_code == 0, deleted.output
    assert f"job {job_id}: deleted" in deleted.stdout and f"document {doc_id}: deleted" in deleted.stdout
    refused = run(["delete", running], **env)
    assert refused.exit_code != 0 and "cancel it first" in refused.output
    gone = run(["delete", job_id], **env)
    assert gone.exit_code != 0 and "not found" in gone.output
    ds = run(["dataset", "delete", dataset], **env)
    assert ds.exit_code == 0 and f"dataset {dataset}: deleted" in ds.stdout, ds.output
    assert rows(settings, [job_id, dataset]) == 0 and rows(settings, [running]) == 4

    not_admin = run(["purge", "--older-than", "5"], **env)
    assert not_admin.exit_code != 0 and "admin" in not_admin.output
    purged = run(["purge", "--older-than", "5"], LONGFORM_URL=server, LONGFORM_API_KEY=keys["admin"])
    assert purged.exit_code == 0, purged.output
    assert purged.stdout.split() == [old] and "purged 1" in purged.stderr


def test_the_embedded_worker_purges_with_retention_days(settings, keys):
    old = add_job(settings, keys["alice_owner"], finished_days_ago=40, files=True)
    recent = add_job(settings, keys["alice_owner"], finished_days_ago=1)
    settings.retention_days = 30
    with running_api(settings):  # the embedded worker purges on its first poll, then every 10 minutes
        wait_until(lambda: rows(settings, [old]) == 0, 20, "the retention purge")
    assert rows(settings, [recent]) == 4
    assert not (Path(settings.longform_data_dir) / "datasets" / old).exists()
