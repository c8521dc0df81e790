"""The REST API over real HTTP, with the embedded worker and the fake model server."""
import json

import httpx
import pytest

from agents.settings import Settings
from db import repo
from db.models import Document, Job
from db.session import Database
from tests.api_server import running_api, wait_for_job
from tests.db_fixtures import sqlite_url


@pytest.fixture
def settings(tmp_path, fake_llm):
    return Settings(
        longform_data_dir=str(tmp_path), database_url=sqlite_url(tmp_path), llm_endpoints=fake_llm.base_url,
        max_body_bytes=64 * 1024, max_document_bytes=256 * 1024,
    )


@pytest.fixture
def api(settings):
    with running_api(settings) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield client


def count_rows(settings, model) -> int:
    with Database(settings.database_url).session() as s:
        return s.query(model).count()


def test_a_chat_job_runs_end_to_end(api):
    response = api.post("/v1/jobs", json={"kind": "chat", "params": {"messages": [{"role": "user", "content": "Say hello in about 20 words."}]}})
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "queued" and body["id"]
    job = wait_for_job(api, body["id"])
    assert job["status"] == "succeeded", job
    assert job["result"]["text"].strip()
    assert job["usage"]["calls"] == 1 and job["usage"]["completion_tokens"] > 0
    steps = api.get(f"/v1/jobs/{body['id']}/steps").json()["items"]
    assert [s["key"] for s in steps] == ["chat"] and steps[0]["status"] == "succeeded"
    listing = api.get("/v1/jobs", params={"status": "succeeded", "kind": "chat"}).json()
    assert listing["total"] == 1 and listing["items"][0]["id"] == body["id"]


def test_events_stream_ends_with_the_final_status(api):
    job_id = api.post("/v1/jobs", json={"kind": "chat", "params": {"messages": [{"role": "user", "content": "hi"}]}}).json()["id"]
    events = []
    with api.stream("GET", f"/v1/jobs/{job_id}/events") as stream:
        kind = None
        for line in stream.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                events.append((kind, json.loads(line[6:])))
    statuses = [d["status"] for k, d in events if k == "status"]
    assert statuses[0] == "queued" and statuses[-1] == "succeeded" and "running" in statuses


def test_idempotency_key_returns_the_existing_job(api):
    body = {"kind": "chat", "params": {"messages": [{"role": "user", "content": "hi"}]}}
    first = api.post("/v1/jobs", json=body, headers={"Idempotency-Key": "abc"})
    again = api.post("/v1/jobs", json=body, headers={"Idempotency-Key": "abc"})
    assert first.status_code == 202 and again.status_code == 200
    assert first.json()["id"] == again.json()["id"]
    body["params"]["max_tokens"] = 5
    conflict = api.post("/v1/jobs", json=body, headers={"Idempotency-Key": "abc"})
    assert conflict.status_code == 409 and "different request" in conflict.json()["detail"]


@pytest.mark.parametrize(
    "payload, status, message",
    [
        ({"kind": "poem", "params": {}}, 400, "unknown job kind 'poem'"),
        ({"kind": "chat", "params": {}}, 422, "messages"),
        ({"kind": "chat", "params": {"messages": [{"role": "user", "content": "x"}], "max_tokens": -1}}, 422, "max_tokens"),
        ({"kind": "chat", "params": {"messages": []}}, 422, "messages"),
        ({"params": {}}, 422, "kind"),
        ({"kind": "chat", "params": {"messages": [{"role": "user", "content": "x"}], "model": "nope"}}, 422,
         "params.model: no model server serves 'nope'"),
        ({"kind": "lengthen", "params": {"instruction": "Write.", "extender_model": "ext_sft"}}, 422,
         "params.extender_model: no model server serves 'ext_sft'"),
        ({"kind": "lengthen", "params": {"instruction": "  "}}, 422, "instruction"),
        ({"kind": "solve", "params": {"question": "  "}}, 422, "question must not be empty"),
        ({"kind": "solve", "params": {"question": "2+2?", "method": "guess"}}, 422, "method: Input should be"),
        ({"kind": "solve", "params": {"question": "2+2?", "max_turns": 50}}, 422, "max_turns: Input should be less than or equal to 10"),
        ({"kind": "solve", "params": {"question": "2+2?", "code_timeout_s": 0}}, 422, "code_timeout_s: Input should be greater than 0"),
        ({"kind": "solve", "params": {"question": "2+2?", "task_model": "nope"}}, 422,
         "params.task_model: no model server serves 'nope'"),
    ],
)
def test_bad_job_requests_get_a_clear_4xx_and_store_nothing(api, settings, payload, status, message):
    response = api.post("/v1/jobs", json=payload)
    assert response.status_code == status
    assert message in response.json()["detail"]
    assert count_rows(settings, Job) == 0


def test_a_body_over_the_limit_is_refused(api, settings):
    huge = {"kind": "chat", "params": {"messages": [{"role": "user", "content": "x" * 100_000}]}}
    response = api.post("/v1/jobs", json=huge)
    assert response.status_code == 413 and "limit" in response.json()["detail"]
    assert count_rows(settings, Job) == 0


def test_documents_are_stored_once_and_bad_uploads_are_refused(api, settings):
    text = "It is a truth universally acknowledged.\n\nA second paragraph here."
    first = api.post("/v1/documents", content=text.encode(), headers={"Content-Type": "text/plain"}, params={"name": "p.txt"})
    assert first.status_code == 201, first.text
    doc = first.json()
    assert doc["words"] == 10 and doc["tokens"] > 0
    again = api.post("/v1/documents", content=text.encode(), headers={"Content-Type": "text/plain"})
    assert again.status_code == 200 and again.json()["id"] == doc["id"]
    assert api.get(f"/v1/documents/{doc['id']}/text").text == text

    not_utf8 = api.post("/v1/documents", content="caf\xe9".encode("latin-1"), headers={"Content-Type": "text/plain"})
    assert not_utf8.status_code == 400 and "UTF-8" in not_utf8.json()["detail"]
    empty = api.post("/v1/documents", content=b"  \n", headers={"Content-Type": "text/plain"})
    assert empty.status_code == 400 and "empty" in empty.json()["detail"]
    too_big = api.post("/v1/documents", content=b"a " * 200_000, headers={"Content-Type": "text/plain"})
    assert too_big.status_code == 413
    assert count_rows(settings, Document) == 1


def test_unknown_ids_are_404(api):
    assert api.get("/v1/jobs/nope").status_code == 404
    assert api.post("/v1/jobs/nope/cancel").status_code == 404
    assert api.get("/v1/documents/nope").status_code == 404
    missing_doc = api.post("/v1/jobs", json={"kind": "summarize", "params": {"document_id": "nope"}})
    assert missing_doc.status_code == 404 and "document nope not found" in missing_doc.json()["detail"]


def test_retry_and_cancel_rules(api):
    job_id = api.post("/v1/jobs", json={"kind": "chat", "params": {"messages": [{"role": "user", "content": "hi"}]}}).json()["id"]
    wait_for_job(api, job_id)
    assert api.post(f"/v1/jobs/{job_id}/cancel").status_code == 409
    response = api.post(f"/v1/jobs/{job_id}/retry")
    assert response.status_code == 409 and "only failed or cancelled" in response.json()["detail"]


def test_health_ready_metrics_and_docs(api):
    assert api.get("/healthz").json() == {"status": "ok"}
    ready = api.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"]["models"]["ok"]
    metrics = api.get("/metrics").text
    assert 'longform_jobs{status="queued"}' in metrics and "longform_queue_depth" in metrics
    assert api.get("/openapi.json").json()["info"]["title"] == "Longform"
    kinds = {k["kind"] for k in api.get("/v1/kinds").json()["items"]}
    assert {"chat", "write", "summarize", "booookscore", "dataset", "solve"} <= kinds


class TestKeys:
    @pytest.fixture
    def keyed(self, settings):
        settings.require_api_keys = "always"
        db = Database(settings.database_url)
        with db.session() as s:
            alice, _ = repo.create_api_key(s, "alice")
            bob, _ = repo.create_api_key(s, "bob")
            admin, _ = repo.create_api_key(s, "ops", is_admin=True)
        with running_api(settings) as url:
            yield url, alice, bob, admin

    def test_keys_are_required_and_scope_jobs(self, keyed, settings):
        url, alice, bob, admin = keyed
        body = {"kind": "chat", "params": {"messages": [{"role": "user", "content": "hi"}]}}
        missing = httpx.post(f"{url}/v1/jobs", json=body)
        assert missing.status_code == 401 and "API key is required" in missing.json()["detail"]
        wrong = httpx.post(f"{url}/v1/jobs", json=body, headers={"Authorization": "Bearer lf_wrong"})
        assert wrong.status_code == 401 and "invalid" in wrong.json()["detail"]
        assert count_rows(settings, Job) == 0

        def as_(key):
            return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30)

        with as_(alice) as a, as_(bob) as b, as_(admin) as root:
            job_id = a.post("/v1/jobs", json=body).json()["id"]
            assert a.get(f"/v1/jobs/{job_id}").status_code == 200
            assert b.get(f"/v1/jobs/{job_id}").status_code == 404  # foreign job: not even its existence
            assert b.post(f"/v1/jobs/{job_id}/cancel").status_code == 404
            assert b.get("/v1/jobs").json()["total"] == 0
            assert root.get(f"/v1/jobs/{job_id}").status_code == 200
            assert root.get("/v1/jobs").json()["total"] == 1


def test_a_chat_job_with_a_json_schema_returns_validated_json(api):
    schema = {"type": "object", "properties": {"title": {"type": "string"}, "points": {"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 4}}, "required": ["title", "points"]}
    params = {"messages": [{"role": "user", "content": "Outline a talk on tides as JSON."}], "json_schema": schema}
    job = wait_for_job(api, api.post("/v1/jobs", json={"kind": "chat", "params": params}).json()["id"])
    assert job["status"] == "succeeded", job
    value = job["result"]["json"]
    assert isinstance(value["title"], str) and 2 <= len(value["points"]) <= 4
    bad = api.post("/v1/jobs", json={"kind": "chat", "params": {**params, "json_schema": {"type": "nonsense"}}})
    assert bad.status_code == 422 and "not a valid JSON schema" in bad.json()["detail"]


def test_a_listing_offset_too_large_for_the_database_is_a_422(api):
    huge = "5520688057515306019239673056137838592"  # found by schemathesis; it used to be a 500
    for path in ("/v1/documents", "/v1/jobs"):
        response = api.get(path, params={"offset": huge})
        assert response.status_code == 422 and "offset" in response.json()["detail"], response.text
        assert api.get(path, params={"offset": 2**31 - 1}).status_code == 200


def test_a_model_the_server_lists_is_accepted(api, fake_llm):
    served = api.get(f"{fake_llm.base_url}/models").json()["data"][0]["id"]
    response = api.post("/v1/jobs", json={"kind": "chat", "params": {
        "messages": [{"role": "user", "content": "Hello"}], "model": served}})
    assert response.status_code == 202, response.text


def test_a_submit_while_the_broker_is_down_is_a_503_and_stores_nothing(tmp_path):
    from fastapi.testclient import TestClient

    from api.app import create_app

    # A Redis broker nobody listens on: the job cannot be queued, so the submit is taken back
    # (a stored job with no message would wait for ever) and the client is told to try again.
    dead = Settings(longform_data_dir=str(tmp_path), database_url=sqlite_url(tmp_path),
                    llm_endpoints="http://127.0.0.1:9/v1", broker_url="redis://127.0.0.1:9/0")
    with Database(dead.database_url).session() as session:
        key, _ = repo.create_api_key(session, "client")
    with TestClient(create_app(dead, run_worker=False), base_url="http://127.0.0.1") as client:
        body = {"kind": "chat", "params": {"messages": [{"role": "user", "content": "hi"}]}}
        response = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "once", "Authorization": f"Bearer {key}"})
        assert response.status_code == 503 and "nothing was stored" in response.json()["detail"]
    assert count_rows(dead, Job) == 0
