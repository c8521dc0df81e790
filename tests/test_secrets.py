"""Secrets never leave the process: API keys, LLM_API_KEY, JUDGE_API_KEY, database and broker
passwords and ADMIN_SESSION_SECRET appear in no log, error, event, job error, /metrics, /readyz
or `longform config` output.

The model server here is a stub that echoes the request's Authorization header, and the bare
key, in its error message (some servers and proxies do); the job's error must still say what
happened (HTTP 401), without the key.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from http.server import BaseHTTPRequestHandler

import httpx
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from agents.redact import redact
from agents.settings import Settings
from api.app import create_app
from api.cli import cli
from db import repo
from db.session import Database
from tests.api_server import running_api, wait_for_job
from tests.db_fixtures import postgres_url, sqlite_url  # noqa: F401 (a fixture)
from tests.http_stub import LoopbackServer
from tests.processes import start_serve

LLM_KEY = "sk-llm-Zq8TopSecretLLMKey"
JUDGE_KEY = "sk-judge-Hh2TopSecretJudgeKey"
DB_PASSWORD = "S3cretPwDb9x"
BROKER_PASSWORD = "R3disPwBroker7x"
ENDPOINT_PASSWORD = "EndpointPw55xyz"
SESSION_SECRET = "admin-session-S3cret-abcdef"
CLI_KEY = "lf_cliKeyTopSecret0123456789abcdef"
STATIC_SECRETS = [LLM_KEY, JUDGE_KEY, DB_PASSWORD, BROKER_PASSWORD, ENDPOINT_PASSWORD, SESSION_SECRET, CLI_KEY]


def assert_no_secret(text: str, where: str, *more: str) -> None:
    found = [s for s in (*STATIC_SECRETS, *more) if s and s in text]
    assert not found, f"{where} shows {found}"


class EchoingModelServer(BaseHTTPRequestHandler):
    """/v1/models answers; every generation is refused with an error quoting the credentials."""

    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path.rstrip("/").endswith("/models"):
            self._send(200, {"object": "list", "data": [{"id": "stub", "object": "model", "max_model_len": 8192}]})
        else:
            self._send(200, {"status": "ok"})

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        auth = self.headers.get("Authorization", "")
        bare = auth.split(" ", 1)[-1]
        self._send(401, {"error": {"message": f"invalid credentials in header 'Authorization: {auth}'; "
                                              f"the key {bare} is not known", "type": "auth_error"}})

    def log_message(self, *args):
        pass


@pytest.fixture
def echoing_server():
    with LoopbackServer(EchoingModelServer) as server:
        yield server


def test_config_masks_every_secret(tmp_path):
    env = {
        "LONGFORM_DATA_DIR": str(tmp_path), "LLM_API_KEY": LLM_KEY, "JUDGE_API_KEY": JUDGE_KEY, "API_KEY": CLI_KEY,
        "DATABASE_URL": f"postgresql://longform:{DB_PASSWORD}@127.0.0.1:5432/longform",
        "BROKER_URL": f"redis://:{BROKER_PASSWORD}@127.0.0.1:6379/0",
        "LLM_ENDPOINTS": f"http://gpu:{ENDPOINT_PASSWORD}@127.0.0.1:8000/v1,http://127.0.0.1:8001/v1",
        "JUDGE_ENDPOINTS": f"http://127.0.0.1:8002/v1?api_key={ENDPOINT_PASSWORD}",
        "ADMIN_SESSION_SECRET": SESSION_SECRET, "RATE_LIMIT_STORAGE": f"redis://:{BROKER_PASSWORD}@127.0.0.1:6379/1",
    }
    runner = CliRunner()
    for args in (["config"], ["config", "--json"]):
        result = runner.invoke(cli, args, env=env)
        assert result.exit_code == 0, result.output
        assert_no_secret(result.output, " ".join(args))
    view = json.loads(runner.invoke(cli, ["config", "--json"], env=env).output)
    # Masked, not dropped: the rest of each value still shows what is configured.
    assert view["database_url"]["value"] == "postgresql://longform:****@127.0.0.1:5432/longform"
    assert view["broker_url"]["value"] == "redis://:****@127.0.0.1:6379/0"
    assert view["llm_endpoints"]["value"] == "http://gpu:****@127.0.0.1:8000/v1,http://127.0.0.1:8001/v1"
    assert view["llm_api_key"]["value"] == "****" and view["admin_session_secret"]["value"] == "****"


def test_redact_catches_the_usual_shapes():
    text = ("Authorization: Bearer abcdefgh12345678; X-API-Key: lf_abcdefghijk123; "
            "url postgresql+psycopg://user:pw0rdpw0rd@db:5432/x; api_key=sk-123456789")
    cleaned = redact(text)
    for secret in ("abcdefgh12345678", "lf_abcdefghijk123", "pw0rdpw0rd", "sk-123456789"):
        assert secret not in cleaned
    assert "postgresql+psycopg://user:****@db:5432/x" in cleaned
    # Ordinary words are kept.
    assert redact("a basic summary by the bearer of the news") == "a basic summary by the bearer of the news"


def test_a_model_server_echoing_the_key_leaks_it_nowhere(tmp_path, echoing_server, caplog):
    caplog.set_level(logging.DEBUG)
    settings = Settings(
        longform_data_dir=str(tmp_path), database_url=sqlite_url(tmp_path), llm_endpoints=echoing_server.url + "/v1",
        llm_api_key=LLM_KEY, judge_api_key=JUDGE_KEY, admin_session_secret=SESSION_SECRET,
        require_api_keys="always", llm_max_retries=0,
    )
    with Database(settings.database_url).session() as session:
        key, _ = repo.create_api_key(session, "alice", is_admin=True)
    shown: list[tuple[str, str]] = []
    with running_api(settings) as url, httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"},
                                                    timeout=30) as client:
        submitted = client.post("/v1/jobs", json={"kind": "chat", "params": {"messages": [{"role": "user", "content": "hi"}]}})
        job_id = submitted.json()["id"]
        job = wait_for_job(client, job_id)
        assert job["status"] == "failed" and "HTTP 401" in job["error"] and "****" in job["error"], job["error"]
        shown.append(("job", json.dumps(job)))
        shown.append(("steps", client.get(f"/v1/jobs/{job_id}/steps", params={"with_output": "true"}).text))
        shown.append(("events", client.get(f"/v1/jobs/{job_id}/events").text))
        shown.append(("listing", client.get("/v1/jobs").text))
        shown.append(("readyz", client.get("/readyz").text))
        shown.append(("metrics", client.get("/metrics").text))
        shown.append(("401", httpx.get(f"{url}/v1/jobs", headers={"Authorization": f"Bearer {LLM_KEY}"}).text))
        shown.append(("422", client.post("/v1/jobs", json={"kind": "chat", "params": {"api_key": LLM_KEY}}).text))
        # The admin UI's job page and dashboard (an admin key sees the endpoints' health).
        with httpx.Client(base_url=url, timeout=30) as ui:
            from api.admin.session import CSRF_FIELD, SessionSigner, COOKIE

            ui.get("/admin/login")
            csrf = SessionSigner(SESSION_SECRET, 3600).loads(ui.cookies.get(COOKIE)).csrf
            assert ui.post("/admin/login", data={"api_key": key, CSRF_FIELD: csrf}).status_code == 303
            shown.append(("admin job page", ui.get(f"/admin/jobs/{job_id}").text))
            shown.append(("admin dashboard", ui.get("/admin/").text))
            shown.append(("admin cookie", str(ui.cookies.get(COOKIE))))
    shown.append(("logs", caplog.text))
    assert "failed" in caplog.text  # the job's failure was logged, without the key
    for where, text in shown:
        assert_no_secret(text, where, key)


def test_a_database_error_shows_no_password(tmp_path, caplog):
    """The database is down: /readyz says so and a request fails, without the URL's password."""
    caplog.set_level(logging.DEBUG)
    settings = Settings(longform_data_dir=str(tmp_path), llm_endpoints="http://127.0.0.1:9/v1",
                        database_url=f"postgresql://longform:{DB_PASSWORD}@127.0.0.1:9/longform")
    client = TestClient(create_app(settings, run_worker=False), raise_server_exceptions=False)  # no lifespan
    ready = client.get("/readyz")
    assert ready.status_code == 503 and not ready.json()["checks"]["database"]["ok"]
    failed = client.get("/v1/jobs")
    assert failed.status_code == 500
    for where, text in (("readyz", ready.text), ("500", failed.text), ("logs", caplog.text)):
        assert_no_secret(text, where)
    result = CliRunner().invoke(cli, ["db", "current"], env={"DATABASE_URL": settings.database_url,
                                                             "LONGFORM_DATA_DIR": str(tmp_path)})
    assert result.exit_code != 0
    assert_no_secret(result.output + str(result.exception or ""), "longform db current")


@pytest.mark.postgres
def test_serve_logs_show_no_secret(tmp_path, echoing_server, postgres_url):  # noqa: F811
    """`longform serve` on PostgreSQL with a password in DATABASE_URL, a model server that
    echoes the key, and an API key in every request: its whole log holds none of them."""
    database_url = postgres_url.replace("://postgres@", f"://postgres:{DB_PASSWORD}@")  # local trust: any password
    assert DB_PASSWORD in database_url
    with Database(database_url).session() as session:
        key, _ = repo.create_api_key(session, "alice")
    env = {
        "DATABASE_URL": database_url, "LONGFORM_DATA_DIR": str(tmp_path), "LLM_ENDPOINTS": echoing_server.url + "/v1",
        "LLM_API_KEY": LLM_KEY, "JUDGE_API_KEY": JUDGE_KEY, "ADMIN_SESSION_SECRET": SESSION_SECRET,
        "REQUIRE_API_KEYS": "always", "LLM_MAX_RETRIES": "0", "BROKER_URL": "",
    }
    proc, url = start_serve(env, tmp_path)
    try:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:
            job_id = client.post("/v1/jobs", json={"kind": "chat", "params": {"messages": [{"role": "user", "content": "hi"}]}}).json()["id"]
            job = wait_for_job(client, job_id)
            assert job["status"] == "failed"
            for path in ("/readyz", "/metrics", f"/v1/jobs/{job_id}/events", "/v1/jobs/nope"):
                assert_no_secret(client.get(path).text, path, key)
            httpx.get(f"{url}/v1/jobs", headers={"Authorization": f"Bearer {LLM_KEY}"})  # a wrong key, logged as a 401
    finally:
        proc.stop()
    log = proc.output()
    assert "job" in log and "failed" in log and "401" in log  # the log was written, and says what happened
    assert_no_secret(log, "longform serve's log", key)
    upgrade = CliRunner().invoke(cli, ["db", "upgrade"], env={"DATABASE_URL": database_url, "LONGFORM_DATA_DIR": str(tmp_path)})
    assert upgrade.exit_code == 0, upgrade.output
    assert "postgres:****@" in upgrade.output
    assert_no_secret(upgrade.output, "longform db upgrade")


def test_an_uncaught_traceback_shows_no_secret(tmp_path):
    """Python prints an uncaught exception's traceback itself, outside logging: in the main thread
    and in any other. After `protect`, both are redacted and still say what failed."""
    script = (
        "import threading\n"
        "from agents.redact import protect\n"
        "from agents.settings import Settings\n"
        "settings = Settings()\n"
        "protect(settings)\n"
        "def leak():\n"
        "    raise ValueError('server said: bad key ' + settings.llm_api_key)\n"
        "t = threading.Thread(target=leak, name='caller'); t.start(); t.join()\n"
        "raise RuntimeError('could not reach ' + settings.database_url)\n"
    )
    env = {**os.environ, "LLM_API_KEY": LLM_KEY,
           "DATABASE_URL": f"postgresql+psycopg://longform:{DB_PASSWORD}@127.0.0.1:1/none"}
    done = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "Exception in thread caller" in done.stderr and "ValueError: server said: bad key ****" in done.stderr
    assert "RuntimeError: could not reach postgresql+psycopg://longform:****@127.0.0.1:1/none" in done.stderr
    assert LLM_KEY not in done.stderr and DB_PASSWORD not in done.stderr
