"""The `longform` command line: local commands on a temp SQLite database, HTTP commands
against a real API server (embedded worker, fake model server), and the event-stream
reconnect against a scripted SSE server that drops its connection."""
from __future__ import annotations

import json
import os
from http.server import BaseHTTPRequestHandler

import pytest
from click.testing import CliRunner

from agents.settings import Settings
from api.cli import cli
from api.cli.base import parse_params
from api.client import parse_sse
from db import repo
from db.schema import current_revision, head_revision
from db.session import Database
from tests.api_server import free_port, running_api
from tests.db_fixtures import sqlite_url
from tests.http_stub import LoopbackServer

# Settings a developer's shell may carry; every test starts without them.
ENV_VARS = (
    "API_KEY", "LONGFORM_API_KEY", "LONGFORM_URL", "DATABASE_URL", "BROKER_URL", "HOST", "PORT",
    "LLM_ENDPOINTS", "LLM_API_KEY", "LLM_MODEL", "JUDGE_ENDPOINTS", "JUDGE_API_KEY", "REQUIRE_API_KEYS",
    "LONGFORM_NO_WORKER", "WORKER_CONCURRENCY",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LONGFORM_DATA_DIR", str(tmp_path / "data"))


def run(args: list[str], **env) -> "click.testing.Result":  # noqa: F821
    return CliRunner().invoke(cli, args, env={k: str(v) if v is not None else None for k, v in env.items()})


@pytest.fixture
def empty_db(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'empty.db'}"


@pytest.fixture
def db_url(tmp_path) -> str:
    return sqlite_url(tmp_path)


# ---- local commands ------------------------------------------------------------------------


def test_config_masks_secrets_and_aligns():
    env = {
        "LLM_API_KEY": "sk-very-secret",
        "DATABASE_URL": "postgresql://bob:hunter2@db.example:5432/longform",
        "LONGFORM_API_KEY": "lf_should_not_show",
    }
    result = run(["config"], **env)
    assert result.exit_code == 0, result.output
    out = result.stdout
    for secret in ("sk-very-secret", "hunter2", "lf_should_not_show"):
        assert secret not in out
    lines = out.strip().splitlines()
    assert len({line.index(" = ") for line in lines}) == 1  # one column for every '='
    values = {line.split(" = ", 1)[0].strip(): line.split(" = ", 1)[1].rsplit("  (", 1) for line in lines}
    assert values["llm_api_key"][0].strip() == "****" and values["api_key"][0].strip() == "****"
    assert values["api_key"][1] == "env LONGFORM_API_KEY)"
    assert values["database_url"][0].strip() == "postgresql://bob:****@db.example:5432/longform"
    assert values["port"] == ["8000".ljust(len(values["port"][0])), "default)"]

    as_json = json.loads(run(["config", "--json"], **env).stdout)
    assert as_json["llm_api_key"] == {"value": "****", "source": "env LLM_API_KEY"}
    assert as_json["judge_api_key"] == {"value": "EMPTY", "source": "default"}


def test_config_file_is_read_below_the_environment(tmp_path):
    config = tmp_path / "longform.toml"
    config.write_text('port = 9100\nllm_model = "from-file"\nhost = "0.0.0.0"\n')
    result = run(["--config", str(config), "config", "--json"], LLM_MODEL="from-env")
    assert result.exit_code == 0, result.output
    view = json.loads(result.stdout)
    assert view["port"] == {"value": 9100, "source": f"file {config}"}
    assert view["llm_model"] == {"value": "from-env", "source": "env LLM_MODEL"}
    bad = tmp_path / "bad.toml"
    bad.write_text("no_such_setting = 1\n")
    result = run(["--config", str(bad), "config"])
    assert result.exit_code == 2 and "unknown settings in" in result.stderr and "no_such_setting" in result.stderr


def test_db_upgrade_and_current(empty_db):
    head = head_revision(empty_db)
    before = run(["db", "current"], DATABASE_URL=empty_db)
    assert before.exit_code == 0 and "none (empty database)" in before.stdout and "outdated" in before.stdout
    upgraded = run(["db", "upgrade"], DATABASE_URL=empty_db)
    assert upgraded.exit_code == 0, upgraded.output
    assert f"upgraded from empty to {head}" in upgraded.stdout
    assert current_revision(empty_db) == head
    again = run(["db", "upgrade"], DATABASE_URL=empty_db)
    assert again.exit_code == 0 and "already at" in again.stdout
    after = run(["db", "current"], DATABASE_URL=empty_db)
    assert f"current: {head}" in after.stdout and "up to date" in after.stdout


def test_keys_create_list_revoke(db_url):
    created = run(["keys", "create", "alice", "--admin"], DATABASE_URL=db_url)
    assert created.exit_code == 0, created.output
    plain = created.stdout.strip()
    assert plain.startswith("lf_") and "shown only now" in created.stderr
    with Database(db_url).session() as session:
        row = repo.verify_api_key(session, plain)
        assert row is not None and row.name == "alice" and row.is_admin
        key_id, prefix = row.id, row.prefix

    listed = run(["keys", "list"], DATABASE_URL=db_url)
    assert listed.exit_code == 0
    assert "alice" in listed.stdout and prefix in listed.stdout and key_id in listed.stdout
    assert plain not in listed.stdout  # only the prefix is ever shown again

    revoked = run(["keys", "revoke", prefix], DATABASE_URL=db_url)
    assert revoked.exit_code == 0 and key_id in revoked.stdout
    with Database(db_url).session() as session:
        assert repo.verify_api_key(session, plain) is None

    missing = run(["keys", "revoke", "lf_nothere"], DATABASE_URL=db_url)
    assert missing.exit_code == 1 and "no API key with id or prefix 'lf_nothere'" in missing.stderr


@pytest.mark.parametrize("args", [["serve"], ["worker"], ["keys", "list"], ["keys", "create", "x"]])
def test_local_commands_refuse_an_outdated_schema(empty_db, args):
    result = run(args, DATABASE_URL=empty_db)
    assert result.exit_code == 2, result.output
    assert "database schema is at nothing (empty database)" in result.stderr
    assert "longform db upgrade" in result.stderr
    assert current_revision(empty_db) is None  # nothing was created behind the user's back


def test_worker_needs_a_broker(db_url):
    result = run(["worker"], DATABASE_URL=db_url)
    assert result.exit_code == 2
    assert "the embedded worker runs inside `longform serve`; set BROKER_URL to run Celery workers" in result.stderr


def test_serve_upgrades_on_request_and_passes_its_flags(monkeypatch, empty_db):
    import uvicorn

    calls = []

    def fake_run(app, **kwargs):
        import os

        calls.append((app, kwargs, dict(os.environ)))

    monkeypatch.setattr(uvicorn, "run", fake_run)
    environment_before = dict(os.environ)
    result = run(
        ["serve", "--host", "0.0.0.0", "--port", "9123", "--upgrade", "--no-worker"],
        DATABASE_URL=empty_db, HOST=None, PORT=None, LONGFORM_NO_WORKER=None,
    )
    assert result.exit_code == 0, result.output
    assert current_revision(empty_db) == head_revision(empty_db)
    [(app, kwargs, environment)] = calls
    settings = app.state.longform.settings  # the flags reach the app through its settings
    assert (settings.host, settings.port, settings.longform_no_worker) == ("0.0.0.0", 9123, True)
    assert settings.sources["port"] == "flag" and settings.database_url == empty_db
    assert (kwargs["host"], kwargs["port"]) == ("0.0.0.0", 9123)
    assert {k: v for k, v in environment.items() if k != "DATABASE_URL"} == {
        k: v for k, v in environment_before.items() if k not in ("DATABASE_URL", "HOST", "PORT", "LONGFORM_NO_WORKER")
    }  # nothing written to the environment
    assert "API key" in result.stderr


def test_parse_params_merges_json_and_pairs(tmp_path):
    assert parse_params(None, None, ("target_words=600", "instruction=Write a story", "judge=false")) == {
        "target_words": 600, "instruction": "Write a story", "judge": False,
    }
    merged = parse_params('{"a": 1, "b": [1, 2]}', None, ("a=2", 'c={"x": "y"}', 'd="42"'))
    assert merged == {"a": 2, "b": [1, 2], "c": {"x": "y"}, "d": "42"}
    path = tmp_path / "p.json"
    path.write_text('{"messages": [{"role": "user", "content": "hi"}]}')
    assert parse_params(None, str(path), ())["messages"][0]["content"] == "hi"
    import click

    for bad in [("[1]", None, ()), ("{oops", None, ()), (None, None, ("novalue",))]:
        with pytest.raises(click.BadParameter):
            parse_params(*bad)


def test_parse_sse_follows_the_event_stream_format():
    lines = [
        ": keep-alive", "",
        "id: 7", "event: progress", 'data: {"done": 1,', 'data:  "total": 3}', "",
        "event: log", "data: plain text", "",
        "id: 9", "data: {}", "",
    ]
    events = list(parse_sse(iter(lines)))
    assert [(e.id, e.event) for e in events] == [("7", "progress"), ("7", "log"), ("9", "message")]
    assert events[0].data == {"done": 1, "total": 3} and events[1].data == "plain text"


# ---- HTTP commands ------------------------------------------------------------------------------


def test_an_unreachable_api_exits_2_with_a_hint():
    url = f"http://127.0.0.1:{free_port()}"
    for args in (["jobs"], ["submit", "chat", "-p", "messages=[]"], ["watch", "abc"]):
        result = run(args, LONGFORM_URL=url)
        assert result.exit_code == 2, result.output
        assert f"cannot reach the Longform API at {url}: is `longform serve` running?" in result.stderr


def test_upload_refuses_non_utf8_locally(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("Caf\u00e9 au lait".encode("latin-1"))
    # The API is unreachable: the refusal must happen before any request.
    result = run(["upload", str(path)], LONGFORM_URL=f"http://127.0.0.1:{free_port()}")
    assert result.exit_code == 1
    assert "is not UTF-8 text (invalid byte 0xe9 at offset 3)" in result.stderr


@pytest.fixture
def api_settings(tmp_path, fake_llm):
    return Settings(longform_data_dir=str(tmp_path), database_url=sqlite_url(tmp_path), llm_endpoints=fake_llm.base_url)


@pytest.fixture
def api_url(api_settings):
    with running_api(api_settings) as url:
        yield url


CHAT = ["-p", 'messages=[{"role": "user", "content": "Say hello in about 20 words."}]', "-p", "max_tokens=64"]


def test_submit_wait_then_inspect_the_job(api_url):
    submitted = run(["submit", "chat", *CHAT, "--wait"], LONGFORM_URL=api_url)
    assert submitted.exit_code == 0, submitted.output
    job_id, text = submitted.stdout.split("\n", 1)
    assert len(job_id) == 32 and text.strip()
    assert f"job {job_id} succeeded" in submitted.stderr

    job = json.loads(run(["status", job_id, "--json"], LONGFORM_URL=api_url).stdout)
    assert job["status"] == "succeeded" and job["result"]["text"] == text.rstrip("\n")

    status = run(["status", job_id], LONGFORM_URL=api_url)
    assert status.exit_code == 0
    assert "succeeded" in status.stdout and "100%" in status.stdout and "1 calls" in status.stdout

    assert run(["result", job_id], LONGFORM_URL=api_url).stdout == text
    assert json.loads(run(["result", job_id, "--json"], LONGFORM_URL=api_url).stdout) == job["result"]
    assert run(["result", job_id, "--field", "finish_reason"], LONGFORM_URL=api_url).stdout.strip() == job["result"]["finish_reason"]
    no_field = run(["result", job_id, "--field", "nope"], LONGFORM_URL=api_url)
    assert no_field.exit_code == 1 and "the result has no field 'nope'" in no_field.stderr

    listing = run(["jobs", "--kind", "chat", "--status", "succeeded"], LONGFORM_URL=api_url)
    assert listing.exit_code == 0 and job_id in listing.stdout and "1-1 of 1" in listing.stdout
    page = json.loads(run(["jobs", "--json", "--status", "failed"], LONGFORM_URL=api_url).stdout)
    assert page["total"] == 0 and page["items"] == []

    steps = run(["steps", job_id], LONGFORM_URL=api_url)
    assert steps.exit_code == 0 and "chat" in steps.stdout and "succeeded" in steps.stdout

    watched = run(["watch", job_id], LONGFORM_URL=api_url)
    assert watched.exit_code == 0 and "succeeded" in watched.stderr


def test_server_errors_are_shown_with_exit_1(api_url):
    job_id = run(["submit", "chat", *CHAT, "--wait"], LONGFORM_URL=api_url).stdout.split("\n", 1)[0]
    cases = [
        (["cancel", job_id], f"job {job_id} already succeeded (HTTP 409)"),
        (["retry", job_id], "only failed or cancelled jobs can be retried"),
        (["status", "0" * 32], f"job {'0' * 32} not found (HTTP 404)"),
        (["submit", "poem"], "unknown job kind 'poem'"),
        (["submit", "chat", "-p", "messages=[]"], "invalid params for kind 'chat'"),
        (["summarize", "doc:" + "0" * 32], "not found (HTTP 404)"),
    ]
    for args, message in cases:
        result = run(args, LONGFORM_URL=api_url)
        assert result.exit_code == 1, (args, result.output)
        assert message in result.stderr, (args, result.stderr)


def test_submit_watch_and_idempotency_key(api_url):
    first = run(["submit", "chat", *CHAT, "--idempotency-key", "k1", "--watch"], LONGFORM_URL=api_url)
    assert first.exit_code == 0, first.output
    job_id, text = first.stdout.split("\n", 1)
    assert text.strip() and "succeeded" in first.stderr
    again = run(["submit", "chat", *CHAT, "--idempotency-key", "k1"], LONGFORM_URL=api_url)
    assert again.exit_code == 0 and again.stdout.strip() == job_id
    assert "existing job" in again.stderr
    changed = run(["submit", "chat", *CHAT, "-p", "max_tokens=5", "--idempotency-key", "k1"], LONGFORM_URL=api_url)
    assert changed.exit_code == 1 and "different request" in changed.stderr


def test_upload_stores_a_document_once(api_url, tmp_path):
    path = tmp_path / "story.txt"
    path.write_text("It was a dark and stormy night. The rain fell in torrents.\n", encoding="utf-8")
    first = run(["upload", str(path), "--name", "story"], LONGFORM_URL=api_url)
    assert first.exit_code == 0, first.output
    doc_id, words, tokens = first.stdout.strip().split("\t")
    assert words == "12 words" and tokens.endswith(" tokens")
    again = run(["upload", str(path), "--name", "story"], LONGFORM_URL=api_url)
    assert again.stdout.split("\t")[0] == doc_id


def test_write_single_prints_the_text_and_its_scores(api_url):
    result = run(["write", "Write a short story about a lighthouse keeper.", "--words", "300", "--method", "single"], LONGFORM_URL=api_url)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip()
    assert "words: " in result.stderr and "(target 300)" in result.stderr and "S_l=" in result.stderr


@pytest.fixture
def idle_api_url(api_settings):
    """An API without a worker: jobs stay queued until cancelled."""
    with running_api(api_settings, run_worker=False) as url:
        yield url


def test_cancel_and_retry_a_queued_job(idle_api_url):
    job_id = run(["submit", "chat", *CHAT, "--priority", "2"], LONGFORM_URL=idle_api_url).stdout.strip()
    status = run(["status", job_id], LONGFORM_URL=idle_api_url).stdout
    assert "queued" in status and "priority  2" in status
    not_yet = run(["result", job_id], LONGFORM_URL=idle_api_url)
    assert not_yet.exit_code == 1 and "is queued: no result yet" in not_yet.stderr

    cancelled = run(["cancel", job_id], LONGFORM_URL=idle_api_url)
    assert cancelled.exit_code == 0 and f"job {job_id}: cancelled" in cancelled.stdout
    watched = run(["watch", job_id], LONGFORM_URL=idle_api_url)
    assert watched.exit_code == 1 and "cancelled" in watched.stderr

    retried = run(["retry", job_id], LONGFORM_URL=idle_api_url)
    assert retried.exit_code == 0 and f"job {job_id}: queued" in retried.stdout


def test_api_keys_are_sent_when_required(tmp_path, fake_llm):
    settings = Settings(
        longform_data_dir=str(tmp_path), database_url=sqlite_url(tmp_path), llm_endpoints=fake_llm.base_url,
        require_api_keys="always",
    )
    plain = run(["keys", "create", "ci"], DATABASE_URL=settings.database_url).stdout.strip()
    with running_api(settings, run_worker=False) as url:
        refused = run(["jobs"], LONGFORM_URL=url)
        assert refused.exit_code == 1 and "an API key is required" in refused.stderr
        wrong = run(["jobs"], LONGFORM_URL=url, LONGFORM_API_KEY="lf_wrong")
        assert wrong.exit_code == 1 and "invalid or revoked API key (HTTP 401)" in wrong.stderr
        allowed = run(["jobs"], LONGFORM_URL=url, LONGFORM_API_KEY=plain)
        assert allowed.exit_code == 0, allowed.output


# ---- watch: resuming a dropped event stream ---------------------------------------------------


class DroppingSseServer(LoopbackServer):
    """Serves one job whose event stream drops after two events; the reconnect must resume."""

    job_id = "f" * 32

    def __init__(self):
        self.last_event_ids: list[str | None] = []
        self.finished = False
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # the body ends when the connection closes

            def log_message(self, *args):
                pass

            def do_GET(self):
                if self.path == f"/v1/jobs/{outer.job_id}":
                    status = "succeeded" if outer.finished else "running"
                    body = json.dumps({
                        "id": outer.job_id, "kind": "summarize", "status": status, "progress": 0.0,
                        "progress_detail": None, "error": None, "started_at": None, "finished_at": None,
                        "result": {"text": "done"} if outer.finished else None, "usage": None, "scores": {},
                    }).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.end_headers()
                    self.wfile.write(body)
                elif self.path == f"/v1/jobs/{outer.job_id}/events":
                    last = self.headers.get("Last-Event-ID")
                    outer.last_event_ids.append(last)
                    if len(outer.last_event_ids) > 3:  # a client that does not resume would loop forever
                        self.send_response(500)
                        self.end_headers()
                        return
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.end_headers()
                    if last is None:
                        events = [(1, "status", {"status": "running"}), (2, "progress", {"done": 1, "total": 3})]
                    else:
                        events = [(3, "progress", {"done": 3, "total": 3}), (4, "status", {"status": "succeeded"})]
                        outer.finished = True
                    for event_id, kind, data in events:
                        self.wfile.write(f"id: {event_id}\nevent: {kind}\ndata: {json.dumps(data)}\n\n".encode())
                else:
                    self.send_response(404)
                    self.end_headers()

        super().__init__(Handler)


def test_watch_resumes_a_dropped_stream_with_last_event_id():
    with DroppingSseServer() as server:
        result = run(["watch", server.job_id], LONGFORM_URL=server.url)
    assert result.exit_code == 0, result.output
    assert server.last_event_ids == [None, "2"]
    assert f"job {server.job_id} succeeded" in result.stderr


def test_fake_llm_is_a_subcommand():
    listed = run(["--help"])
    assert "fake-llm" in listed.stdout
    help_text = run(["fake-llm", "--help"])
    assert help_text.exit_code == 0 and "--max-num-seqs" in help_text.stdout


def a_short_book(path) -> str:
    """About 2,000 words in 30 paragraphs: several chunks at chunk size 256."""
    names = ["Anne", "Bertram", "Clara", "Dmitri", "Elise", "Farid"]
    places = ["the mill", "the harbour", "the old library", "the orchard", "the station"]
    paragraphs = []
    for p in range(30):
        sentences = [
            f"In chapter {p + 1}, {names[p % 6]} walked to {places[p % 5]} before the sun rose over the valley.",
            f"{names[(p + 1) % 6]} had promised to bring the letters, yet the road was flooded after the storm.",
            "They argued about the debt their families owed, and about who would speak first at the meeting.",
            f"By evening {names[(p + 2) % 6]} understood that the secret of {places[(p + 3) % 5]} could not stay hidden.",
            "Nobody slept well that night, and the dogs barked at every passing cart.",
        ]
        paragraphs.append(" ".join(sentences))
    path.write_text("\n\n".join(paragraphs) + "\n", encoding="utf-8")
    return str(path)


def test_summarize_uploads_a_file_and_prints_the_summary(api_url, tmp_path):
    book = a_short_book(tmp_path / "book.txt")
    result = run(["summarize", book, "--chunk-size", "256", "--words", "120"], LONGFORM_URL=api_url)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip()
    assert "document " in result.stderr and " uploaded: " in result.stderr
    assert "summarize job " in result.stderr and " succeeded" in result.stderr

    job_id = result.stderr.split("summarize job ", 1)[1].split(":", 1)[0]
    summary = json.loads(run(["result", job_id, "--json"], LONGFORM_URL=api_url).stdout)
    assert summary["chunks"] >= 3 and summary["summary"].strip() == result.stdout.strip()

    doc_id = result.stderr.split("document ", 1)[1].split(" ", 1)[0]
    queued = run(["summarize", f"doc:{doc_id}", "--method", "incremental", "--no-watch"], LONGFORM_URL=api_url)
    assert queued.exit_code == 0, queued.output
    job = json.loads(run(["status", queued.stdout.strip(), "--json"], LONGFORM_URL=api_url).stdout)
    assert job["params"]["document_id"] == doc_id and job["params"]["method"] == "incremental"


def test_booookscore_scores_a_summary_file_and_a_summarize_job(tmp_path, fake_llm):
    pytest.importorskip("agents.booookscore", reason="the booookscore kind is not in this tree yet")
    settings = Settings(
        longform_data_dir=str(tmp_path), database_url=sqlite_url(tmp_path), llm_endpoints=fake_llm.base_url,
        judge_endpoints=fake_llm.base_url,
    )
    summary = tmp_path / "summary.txt"
    summary.write_text(
        "Anne leaves the mill at dawn. She meets Bertram, who lost the letters. "
        "The families quarrel over an old debt. In the end the secret of the library comes out.\n",
        encoding="utf-8",
    )
    with running_api(settings) as url:
        from_file = run(["booookscore", str(summary), "--mode", "batched"], LONGFORM_URL=url)
        assert from_file.exit_code == 0, from_file.output
        assert from_file.stdout.startswith("BooookScore: ")
        assert "judged sentences flagged" in from_file.stdout and "[batched]" in from_file.stdout

        book = a_short_book(tmp_path / "book.txt")
        summarized = run(["summarize", book, "--chunk-size", "256", "--words", "80"], LONGFORM_URL=url)
        job_id = summarized.stderr.split("summarize job ", 1)[1].split(":", 1)[0]
        from_job = run(["booookscore", job_id], LONGFORM_URL=url)
        assert from_job.exit_code == 0, from_job.output
        assert from_job.stdout.startswith("BooookScore: ")


def test_worker_nice_lowers_the_process_and_its_session_cpu_priority():
    import subprocess
    import sys

    code = ("import os, pathlib; from api.cli.processes import lower_cpu_priority; lower_cpu_priority(7); "
            "group = pathlib.Path('/proc/self/autogroup'); "
            "print(os.nice(0), group.read_text().split()[-1] if group.exists() else 7)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         start_new_session=True).stdout.split()
    assert out == ["7", "7"]
