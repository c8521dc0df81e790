"""The admin UI without a browser (FastAPI's TestClient): session cookie flags, CSRF on every
POST, a key's jobs only, the keyless banner, escaping, and the forms made from params schemas."""
from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from agents.settings import Settings
from api.admin.forms import form_fields, read_params
from api.admin.session import SessionSigner, UiSession
from api.app import create_app
from db import repo
from db.session import Database
from tests.db_fixtures import sqlite_url


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


@pytest.fixture
def keyed(tmp_path):
    settings = Settings(longform_data_dir=str(tmp_path), database_url=sqlite_url(tmp_path),
                        llm_endpoints="http://127.0.0.1:9/v1", require_api_keys="always")
    with Database(settings.database_url).session() as session:
        admin_key, _ = repo.create_api_key(session, "ops", is_admin=True)
        alice_key, alice = repo.create_api_key(session, "alice")
        bob_key, bob = repo.create_api_key(session, "bob")
        alice_job = repo.create_job(session, "chat", {"messages": [{"role": "user", "content": "alice's"}]},
                                    owner=alice.id)[0].id
        bob_job = repo.create_job(session, "chat", {"messages": [{"role": "user", "content": "bob's"}]},
                                  owner=bob.id)[0].id
    with TestClient(create_app(settings, run_worker=False), base_url="http://127.0.0.1") as client:
        yield {"client": client, "settings": settings, "admin": admin_key, "alice": alice_key, "bob": bob_key,
               "alice_job": alice_job, "bob_job": bob_job, "alice_id": alice.id}


def log_in(client: TestClient, key: str):
    page = client.get("/admin/login")
    return client.post("/admin/login", data={"csrf_token": csrf_of(page.text), "api_key": key}, follow_redirects=False)


def test_pages_need_a_login_and_the_cookie_is_httponly_strict_and_scoped(keyed):
    client = keyed["client"]
    assert client.get("/admin/jobs", follow_redirects=False).headers["location"] == "/admin/login"
    response = log_in(client, keyed["alice"])
    assert response.status_code == 303 and response.headers["location"] == "/admin/"
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/admin" in cookie
    assert keyed["alice"] not in cookie  # the session names the key's id, never the key
    page = client.get("/admin/")
    assert page.status_code == 200 and "Dashboard" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]


def test_a_wrong_key_and_a_forged_cookie_are_refused(keyed):
    client = keyed["client"]
    assert log_in(client, "lf_nope").status_code == 401
    client.cookies.set("longform_admin", "eyJrIjoiYWRtaW4ifQ.forged", path="/admin")
    assert client.get("/admin/", follow_redirects=False).status_code == 303


def test_every_post_needs_the_sessions_csrf_token(keyed):
    client = keyed["client"]
    page = client.get("/admin/login")
    assert client.post("/admin/login", data={"api_key": keyed["alice"]}).status_code == 403
    assert client.post("/admin/login", data={"api_key": keyed["alice"], "csrf_token": "x"}).status_code == 403
    log_in(client, keyed["alice"])
    token = csrf_of(client.get("/admin/").text)
    assert token != csrf_of(page.text)  # a new token at login
    job = keyed["alice_job"]
    for path, data in [(f"/admin/jobs/{job}/cancel", {}), (f"/admin/jobs/{job}/retry", {}),
                       ("/admin/jobs/cancel", {"job": job}), ("/admin/submit", {"kind": "chat"}),
                       ("/admin/logout", {})]:
        assert client.post(path, data=data, follow_redirects=False).status_code == 403, path
        assert client.post(path, data={**data, "csrf_token": "wrong"}, follow_redirects=False).status_code == 403
    with Database(keyed["settings"].database_url).reading() as session:
        assert repo.get_job(session, job).status == "queued"  # nothing happened
    assert client.post(f"/admin/jobs/{job}/cancel", data={"csrf_token": token}, follow_redirects=False).status_code == 303
    with Database(keyed["settings"].database_url).reading() as session:
        assert repo.get_job(session, job).status == "cancelled"


def test_a_key_sees_and_acts_on_its_own_jobs_only_and_an_admin_key_on_all(keyed):
    client = keyed["client"]
    log_in(client, keyed["alice"])
    token = csrf_of(client.get("/admin/").text)
    listing = client.get("/admin/jobs").text
    assert keyed["alice_job"][:12] in listing and keyed["bob_job"][:12] not in listing
    for path in (f"/admin/jobs/{keyed['bob_job']}", f"/admin/jobs/{keyed['bob_job']}/fragment",
                 f"/admin/jobs/{keyed['bob_job']}/events", f"/admin/jobs/{keyed['bob_job']}/steps/chat"):
        assert client.get(path).status_code == 404, path
    assert client.post(f"/admin/jobs/{keyed['bob_job']}/cancel", data={"csrf_token": token}).status_code == 404
    client.post("/admin/jobs/cancel", data={"csrf_token": token, "job": [keyed["bob_job"]]})
    with Database(keyed["settings"].database_url).reading() as session:
        assert repo.get_job(session, keyed["bob_job"]).status == "queued"
    assert "Model endpoints" not in client.get("/admin/").text  # endpoints and workers: admin keys only
    client.cookies.clear()
    log_in(client, keyed["admin"])
    listing = client.get("/admin/jobs").text
    assert keyed["alice_job"][:12] in listing and keyed["bob_job"][:12] in listing
    only_alice = client.get("/admin/jobs", params={"owner": keyed["alice_id"]}).text
    assert keyed["alice_job"][:12] in only_alice and keyed["bob_job"][:12] not in only_alice
    assert client.get(f"/admin/jobs/{keyed['bob_job']}").status_code == 200


def test_delete_buttons_remove_finished_jobs_and_documents_of_the_key_only(keyed):
    client, url = keyed["client"], keyed["settings"].database_url
    log_in(client, keyed["alice"])
    token = csrf_of(client.get("/admin/").text)
    job = keyed["alice_job"]
    assert 'id="delete-job"' not in client.get(f"/admin/jobs/{job}").text  # queued: cancel first
    refused = client.post(f"/admin/jobs/{job}/delete", data={"csrf_token": token})
    assert "cancel it first" in refused.text
    assert client.post(f"/admin/jobs/{job}/delete", data={}, follow_redirects=False).status_code == 403  # CSRF
    client.post(f"/admin/jobs/{job}/cancel", data={"csrf_token": token})
    assert 'id="delete-job"' in client.get(f"/admin/jobs/{job}").text
    assert client.post(f"/admin/jobs/{keyed['bob_job']}/delete", data={"csrf_token": token}).status_code == 404
    gone = client.post(f"/admin/jobs/{job}/delete", data={"csrf_token": token}, follow_redirects=False)
    assert gone.status_code == 303 and gone.headers["location"] == "/admin/jobs"
    with Database(url).reading() as session:
        assert repo.get_job(session, job) is None and repo.get_job(session, keyed["bob_job"]) is not None
    page = client.post("/admin/documents", data={"csrf_token": token, "name": "notes.txt"},
                       files={"file": ("notes.txt", b"A short text to delete.", "text/plain")})
    doc_id = re.search(r"document (\w+) stored", page.text).group(1)
    assert "delete-document" in page.text
    page = client.post(f"/admin/documents/{doc_id}/delete", data={"csrf_token": token})
    assert f"document {doc_id} deleted" in page.text and f"<code>{doc_id}</code>" not in page.text
    assert client.post(f"/admin/documents/{doc_id}/delete", data={"csrf_token": token}).status_code == 404


def test_a_revoked_key_is_logged_out(keyed):
    client = keyed["client"]
    log_in(client, keyed["alice"])
    assert client.get("/admin/", follow_redirects=False).status_code == 200
    with Database(keyed["settings"].database_url).session() as session:
        repo.revoke_api_key(session, keyed["alice_id"])
    assert client.get("/admin/", follow_redirects=False).status_code == 303


def test_keyless_mode_needs_no_login_says_so_and_still_checks_csrf(tmp_path):
    settings = Settings(longform_data_dir=str(tmp_path), database_url=sqlite_url(tmp_path),
                        llm_endpoints="http://127.0.0.1:9/v1")
    with TestClient(create_app(settings, run_worker=False)) as client:
        page = client.get("/admin/")
        assert page.status_code == 200 and 'id="keyless-banner"' in page.text
        assert client.post("/admin/submit", data={"kind": "chat"}).status_code == 403
        form = client.get("/admin/submit", params={"kind": "write"})
        submitted = client.post("/admin/submit", follow_redirects=False, data={
            "csrf_token": csrf_of(form.text), "kind": "write", "p.instruction": "Write <b>bold</b> things",
            "p.target_words": "300", "p.judge": "false", "priority": "3"})
        assert submitted.status_code == 303
        job = client.get(submitted.headers["location"])
        assert "&lt;b&gt;bold&lt;/b&gt;" in job.text and "<b>bold</b>" not in job.text
        with Database(settings.database_url).reading() as session:
            stored = repo.list_jobs(session)[0][0]
        assert stored.params["target_words"] == 300 and stored.params["judge"] is False and stored.priority == 3
        refused = client.post("/admin/submit", data={"csrf_token": csrf_of(form.text), "kind": "write",
                                                      "p.instruction": " ", "p.target_words": "many"})
        assert refused.status_code == 422 and "target_words" in refused.text


def test_forms_follow_each_kinds_params_schema():
    from agents.kinds import all_kinds

    for kind in all_kinds():
        fields = form_fields(kind.params.model_json_schema())
        assert fields, kind.name
    from agents.agentwrite import WriteParams

    fields = {f.name: f for f in form_fields(WriteParams.model_json_schema())}
    assert fields["instruction"].widget == "textarea" and fields["instruction"].required
    assert fields["target_words"].widget == "number" and fields["target_words"].step == "1"
    assert fields["method"].widget == "select" and fields["method"].options == ["agentwrite", "single"]
    assert fields["judge"].widget == "bool" and fields["temperature"].widget == "number"
    params, errors = read_params(list(fields.values()), {"p.instruction": "x", "p.temperature": "0.5",
                                                         "p.method": "single", "p.target_words": ""})
    assert params == {"instruction": "x", "temperature": 0.5, "method": "single"} and not errors


def test_session_cookies_expire_and_resist_tampering():
    signer = SessionSigner("secret", max_age_s=60)
    session = UiSession(key_id="k1")
    value = signer.dumps(session)
    assert signer.loads(value).key_id == "k1"
    assert SessionSigner("other", 60).loads(value) is None
    payload, mac = value.rsplit(".", 1)
    assert signer.loads(payload[:-2] + "AA." + mac) is None
    session.issued -= 120
    assert signer.loads(signer.dumps(session)) is None
