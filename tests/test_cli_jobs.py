"""Generic job commands and the job-kind contract: `result` prints the field the kind's view
names (GET /v1/kinds), `retry --mode` and the server's stale-steps refusal, and every API
command stopping at once (exit 2) when nothing answers at the API URL.

A scripted stand-in API on loopback plays the server where the test needs answers the real
one does not give (a kind it does not have, a 409 with stale steps); the rest runs against
the real API server."""
from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler
from typing import Any, Callable

import pytest

from tests.api_server import free_port, running_api
from tests.http_stub import LoopbackServer
from tests.test_cli import CHAT, a_short_book, api_settings, api_url, clean_env, run  # noqa: F401  (fixtures)

Route = Callable[[Any], tuple[int, Any]]  # request JSON body (None without one) -> (status, JSON answer)


class ScriptedApi(LoopbackServer):
    """Answers (method, path) from `routes`; /healthz answers 200; anything else 404. Records
    every request as (method, path, JSON body or None)."""

    def __init__(self, routes: dict[tuple[str, str], Route]):
        self.requests: list[tuple[str, str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def answer(self, method: str):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                outer.requests.append((method, self.path, body))
                route = routes.get((method, self.path))
                if self.path == "/healthz":
                    status, data = 200, {"status": "ok"}
                elif route is None:
                    status, data = 404, {"detail": "Not Found"}
                else:
                    status, data = route(body)
                raw = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def do_GET(self):
                self.answer("GET")

            def do_POST(self):
                self.answer("POST")

        super().__init__(Handler)


def a_job(job_id: str, kind: str, result: Any, status: str = "succeeded") -> dict[str, Any]:
    return {"id": job_id, "kind": kind, "status": status, "progress": 1.0, "progress_detail": None, "error": None,
            "started_at": None, "finished_at": None, "result": result, "usage": None, "scores": {}}


def a_kind(name: str, text_field: str | None) -> dict[str, Any]:
    view = {"text": text_field, "plan": None, "tree": None, "transcript": None, "flagged": None}
    return {"kind": name, "description": name, "version": 1, "params_schema": {}, "result_schema": {}, "view": view}


def answer(status: int, data: Any) -> Route:
    return lambda _body: (status, data)


# ---- result: the kind's view says which field is the text ------------------------------------


def test_result_prints_the_field_named_by_the_kinds_view():
    shout = {"answer": "HELLO THERE", "text": "not the main text of a shout"}
    routes = {
        ("GET", "/v1/kinds"): answer(200, {"items": [a_kind("shout", "answer"), a_kind("tally", None)]}),
        ("GET", "/v1/jobs/a"): answer(200, a_job("a", "shout", shout)),
        ("GET", "/v1/jobs/b"): answer(200, a_job("b", "tally", {"text": "a text, but not declared", "count": 3})),
        ("GET", "/v1/jobs/c"): answer(200, a_job("c", "unlisted", {"text": "an unknown kind's text"})),
        ("GET", "/v1/jobs/d"): answer(200, a_job("d", "shout", {"answer": ["not", "a", "string"]})),
    }
    with ScriptedApi(routes) as api:
        main_text = run(["result", "a"], LONGFORM_URL=api.url)
        assert main_text.exit_code == 0, main_text.output
        assert main_text.stdout == "HELLO THERE\n"
        assert [(m, p) for m, p, _ in api.requests] == [("GET", "/healthz"), ("GET", "/v1/jobs/a"), ("GET", "/v1/kinds")]

        assert json.loads(run(["result", "a", "--json"], LONGFORM_URL=api.url).stdout) == shout
        assert run(["result", "a", "--field", "text"], LONGFORM_URL=api.url).stdout == shout["text"] + "\n"
        for job_id, result in (("b", {"text": "a text, but not declared", "count": 3}),
                               ("c", {"text": "an unknown kind's text"}), ("d", {"answer": ["not", "a", "string"]})):
            shown = run(["result", job_id], LONGFORM_URL=api.url)
            assert shown.exit_code == 0 and json.loads(shown.stdout) == result, (job_id, shown.output)


def test_result_is_json_when_the_server_lists_no_kinds():
    routes = {("GET", "/v1/jobs/a"): answer(200, a_job("a", "chat", {"text": "hi"}))}
    with ScriptedApi(routes) as api:  # GET /v1/kinds answers 404
        shown = run(["result", "a"], LONGFORM_URL=api.url)
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout) == {"text": "hi"}


def test_result_of_real_kinds_follows_their_views(api_url, tmp_path):
    chat = run(["submit", "chat", *CHAT, "--wait"], LONGFORM_URL=api_url)
    chat_id, text = chat.stdout.split("\n", 1)
    assert run(["result", chat_id], LONGFORM_URL=api_url).stdout == text  # chat: view.text = "text"

    summarized = run(["summarize", a_short_book(tmp_path / "book.txt"), "--chunk-size", "256", "--words", "80"],
                     LONGFORM_URL=api_url)
    assert summarized.exit_code == 0, summarized.output
    job_id = summarized.stderr.split("summarize job ", 1)[1].split(":", 1)[0]
    result = json.loads(run(["result", job_id, "--json"], LONGFORM_URL=api_url).stdout)
    assert run(["result", job_id], LONGFORM_URL=api_url).stdout == result["summary"] + "\n"  # view.text = "summary"

    flagged = run(["booookscore", job_id], LONGFORM_URL=api_url)  # booookscore: no main text, so JSON
    assert flagged.exit_code == 0, flagged.output
    score_id = flagged.stderr.split("booookscore job ", 1)[1].split(":", 1)[0]
    shown = run(["result", score_id], LONGFORM_URL=api_url)
    assert shown.exit_code == 0 and json.loads(shown.stdout) == json.loads(run(["result", score_id, "--json"], LONGFORM_URL=api_url).stdout)


# ---- retry --mode ---------------------------------------------------------------------------

STALE = {
    "message": "job j1 has steps stored by older code",
    "stale_steps": [
        {"key": "summarize/chunk-0003", "changed": ["template summarize/_guidelines.j2", "kind version 2 -> 3"]},
        {"key": "summarize/merge-0001", "changed": ["template summarize/merge.j2"]},
    ],
}


def retry_route(body: Any) -> tuple[int, Any]:
    if not body:
        return 409, {"detail": STALE}
    return 202, {**a_job("j1", "summarize", None, status="queued"), "echo": body}


def test_retry_lists_stale_steps_and_sends_the_mode():
    with ScriptedApi({("POST", "/v1/jobs/j1/retry"): retry_route}) as api:
        refused = run(["retry", "j1"], LONGFORM_URL=api.url)
        assert refused.exit_code == 1, refused.output
        assert refused.stdout == ""
        lines = refused.stderr.splitlines()
        assert lines[0] == "Error: job j1 has steps stored by older code (HTTP 409)"
        assert "  summarize/chunk-0003: template summarize/_guidelines.j2, kind version 2 -> 3" in lines
        assert "  summarize/merge-0001: template summarize/merge.j2" in lines
        assert lines[-1] == ("run `longform retry j1 --mode reuse` to keep their stored outputs, "
                             "or `--mode fresh` to run them again")
        assert api.requests[-1] == ("POST", "/v1/jobs/j1/retry", None)  # no body without --mode

        for mode in ("reuse", "fresh"):
            retried = run(["retry", "j1", "--mode", mode], LONGFORM_URL=api.url)
            assert retried.exit_code == 0, retried.output
            assert retried.stdout == "job j1: queued\n"
            assert api.requests[-1] == ("POST", "/v1/jobs/j1/retry", {"mode": mode})

        bad = run(["retry", "j1", "--mode", "later"], LONGFORM_URL=api.url)
        assert bad.exit_code == 2 and "'later' is not one of 'reuse', 'fresh'" in bad.stderr


def test_other_409s_on_retry_stay_one_line(api_url):
    job_id = run(["submit", "chat", *CHAT, "--wait"], LONGFORM_URL=api_url).stdout.split("\n", 1)[0]
    refused = run(["retry", job_id, "--mode", "fresh"], LONGFORM_URL=api_url)
    assert refused.exit_code == 1
    assert refused.stderr == (f"Error: only failed or cancelled jobs can be retried; job {job_id} is succeeded "
                              "(HTTP 409)\n")


def test_retry_with_a_mode_requeues_a_cancelled_job(api_settings):
    with running_api(api_settings, run_worker=False) as url:
        job_id = run(["submit", "chat", *CHAT], LONGFORM_URL=url).stdout.strip()
        assert run(["cancel", job_id], LONGFORM_URL=url).exit_code == 0
        retried = run(["retry", job_id, "--mode", "reuse"], LONGFORM_URL=url)
        assert retried.exit_code == 0, retried.output
        assert retried.stdout == f"job {job_id}: queued\n"


# ---- nothing answers: every API command stops before doing anything ---------------------------


@pytest.fixture
def book(tmp_path) -> str:
    return a_short_book(tmp_path / "book.txt")


API_COMMANDS = [
    ["submit", "chat", *CHAT], ["jobs"], ["status", "j"], ["result", "j"], ["cancel", "j"], ["retry", "j"],
    ["retry", "j", "--mode", "fresh"], ["steps", "j"], ["watch", "j"], ["upload", "BOOK"], ["summarize", "BOOK"],
    ["summarize", "doc:d"], ["booookscore", "BOOK"], ["booookscore", "j"], ["write", "Write a poem."],
    ["eval", "longbench-write", "--limit", "1"], ["dataset", "export", "d"],
]


@pytest.mark.parametrize("args", API_COMMANDS, ids=lambda args: " ".join(args[:2]))
def test_every_api_command_stops_when_the_api_does_not_answer(args, book, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where eval would write its report
    url = f"http://127.0.0.1:{free_port()}"
    result = run([book if a == "BOOK" else a for a in args], LONGFORM_URL=url)
    assert result.exit_code == 2, result.output
    assert result.stderr == f"Error: cannot reach the Longform API at {url}: is `longform serve` running?\n"
    assert result.stdout == "" and list(tmp_path.iterdir()) == [tmp_path / "book.txt"]
