"""Bad input everywhere: schemathesis fuzzes every operation of the API's own OpenAPI schema.

A real API (uvicorn on loopback, no worker: jobs stay queued) over a fresh SQLite database that
holds a document, a succeeded job, a failed job and a finished dataset build of the key's owner.
Every generated request (schema-valid and schema-violating, the coverage phase's boundary values
and unsupported methods) must get no 5xx, every 4xx must be JSON with a non-empty message, and
responses must match the documented schemas and content types. Most requests carry an API key
(a user's or an admin's, so auth does not answer everything with 401); every fifth goes without
one, or with a wrong one. Half the path ids name the seeded rows (restored before each request),
so the handlers behind the 404s run too.

Repeatable: a fixed schemathesis seed, derandomized Hypothesis, no example database (Hypothesis
also mixes in constants of the modules loaded so far, so two runs may differ in a few requests).
Bounded: at most 40 generated examples per operation and phase (under a minute on 2 cores).
"""
from __future__ import annotations

import hashlib
import itertools
import json
import tempfile

import hypothesis
import pytest
import schemathesis
from schemathesis.checks import content_type_conformance, not_a_server_error, response_schema_conformance

from agents.settings import Settings
from api.app import create_app
from db import repo
from db.models import Document, Job, utcnow
from db.session import Database
from tests.api_server import running_api
from tests.db_fixtures import _drop, _postgres_database, sqlite_url

pytestmark = pytest.mark.slow

MAX_EXAMPLES = 40
SEED = 20261130
KINDS = ("chat", "write", "lengthen", "summarize", "booookscore", "solve", "dataset")


class Seeded:
    """What the fuzzed requests may hit: keys, and the ids of real rows (fixed, so they can be restored)."""

    user_key = admin_key = user_id = ""
    document_id, succeeded_id, failed_id, dataset_id = "fuzzdoc", "fuzzjobok", "fuzzjobfailed", "fuzzdataset"
    database: Database | None = None


SEEDED = Seeded()
REACHED: set[str] = set()  # operations that answered 2xx at least once
_calls = itertools.count()
CHAT = {"messages": [{"role": "user", "content": "hi"}]}


def _restore_seeded_rows() -> None:
    """Put the seeded rows back as they were: a fuzzed DELETE, purge, cancel or retry may have
    changed them, and the next operations should still find them."""
    now = utcnow()
    rows = {
        SEEDED.succeeded_id: dict(kind="chat", params=CHAT, status="succeeded", progress=1.0,
                                  result={"text": "hello", "finish_reason": "stop"}),
        SEEDED.failed_id: dict(kind="chat", params=CHAT, status="failed", error="the model server answered 500"),
        SEEDED.dataset_id: dict(kind="dataset", params={"recipe": "longwriter", "items": [{"instruction": "Write."}]},
                                status="succeeded", progress=1.0, result={"files": {}, "stats": {}}),
    }
    with SEEDED.database.session() as s:
        if s.get(Document, SEEDED.document_id) is None:
            text = "A seeded document. It has two sentences."
            s.add(Document(id=SEEDED.document_id, owner=SEEDED.user_id, sha256="0" * 64, name="seed.txt", text=text,
                           bytes=len(text), words=7, tokens=9))
        for job_id, values in rows.items():
            job = s.get(Job, job_id)
            if job is None:
                job = Job(id=job_id, owner=SEEDED.user_id)
                s.add(job)
            for name, value in dict(values, created_at=now, finished_at=now, cancel_requested=False).items():
                setattr(job, name, value)


def _seed(database_url: str) -> None:
    SEEDED.database = Database(database_url)
    with SEEDED.database.session() as s:
        SEEDED.user_key, user = repo.create_api_key(s, "fuzz")
        SEEDED.admin_key, _ = repo.create_api_key(s, "fuzz-admin", is_admin=True)
        s.flush()
        SEEDED.user_id = user.id
    _restore_seeded_rows()


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def api_url(request, tmp_path_factory, fake_llm_session):
    """The API on each database: PostgreSQL refuses some text SQLite takes (NUL), so both are fuzzed."""
    tmp = tmp_path_factory.mktemp("fuzz")
    if request.param == "sqlite":
        database_url = sqlite_url(tmp)
    else:
        admin, name, database_url = _postgres_database()
        request.addfinalizer(lambda: _drop(admin, name))
    settings = Settings(
        longform_data_dir=str(tmp), database_url=database_url, llm_endpoints=fake_llm_session.base_url,
        require_api_keys="always", max_body_bytes=64 * 1024, max_document_bytes=256 * 1024,
    )
    _seed(settings.database_url)
    with running_api(settings, run_worker=False) as url:
        yield url


def _openapi() -> dict:
    """The schema as the app builds it (no server needed to collect the tests)."""
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(Settings(longform_data_dir=tmp, database_url=f"sqlite:///{tmp}/unused.db",
                                  llm_endpoints="http://127.0.0.1:9/v1"), run_worker=False)
        return app.openapi()


schema = schemathesis.openapi.from_dict(_openapi(), config=schemathesis.Config.from_dict({
    "seed": SEED,
    "cache": {"enabled": False},
    "generation": {"mode": "all", "max-examples": MAX_EXAMPLES, "database": "none"},
}))


def _pick(case, choices):
    """A deterministic choice from the case's own content (same examples, same choice)."""
    digest = hashlib.sha256(repr((case.path_parameters, case.query, case.body)).encode("utf-8", "surrogatepass")).digest()
    return choices[digest[0] % len(choices)]


def _aim_at_seeded_rows(case) -> None:
    """Half the generated ids become real ones (a random string only ever reaches the 404).
    Events only of a finished job: a queued one's stream would wait for a worker that is not there.
    Retry mostly of the failed job (the one it accepts). Hypothesis draws constants from the modules
    loaded so far, and the server imports some lazily, so generation is not exactly repeatable:
    the aim is wide enough that every handler is reached whatever is drawn."""
    params = case.path_parameters or {}
    if "job_id" in params:
        if case.path.endswith("/events"):
            real = SEEDED.succeeded_id
        elif case.path.endswith("/retry"):
            real = _pick(case, [SEEDED.failed_id, SEEDED.failed_id, SEEDED.succeeded_id])
        else:
            real = _pick(case, [SEEDED.succeeded_id, SEEDED.failed_id, SEEDED.dataset_id])
        params["job_id"] = _pick(case, [real, params["job_id"]])
    if "dataset_id" in params:
        params["dataset_id"] = _pick(case, [SEEDED.dataset_id, SEEDED.dataset_id, SEEDED.succeeded_id, params["dataset_id"]])
    if "document_id" in params:
        params["document_id"] = _pick(case, [SEEDED.document_id, params["document_id"]])
    if case.path in ("/v1/jobs", "/v1/datasets") and case.method == "POST" and isinstance(case.body, dict):
        # A real kind (or recipe) now and then, so the params validation of each kind runs.
        if case.path == "/v1/jobs" and _pick(case, [True, False]):
            case.body["kind"] = _pick(case, KINDS)
        if case.path == "/v1/datasets" and _pick(case, [True, False]):
            case.body["recipe"] = _pick(case, ["longwriter", "selflengthen", "ruler-mlt"])


def _auth_headers() -> dict[str, str]:
    n = next(_calls)
    if n % 10 == 4:
        return {}
    if n % 10 == 9:
        return {"Authorization": "Bearer lf_not_a_key"}
    return {"Authorization": f"Bearer {SEEDED.admin_key if n % 3 == 0 else SEEDED.user_key}"}


def every_4xx_has_a_message(ctx, response, case):
    """A 4xx is JSON with a non-empty `detail` (a string, or an object with a message)."""
    if not 400 <= response.status_code < 500:
        return None
    try:
        body = json.loads(response.content)
    except ValueError:
        raise AssertionError(f"{response.status_code} without a JSON body: {response.content[:200]!r}") from None
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, dict):
        detail = detail.get("message")
    assert isinstance(detail, str) and detail.strip(), f"{response.status_code} without a message: {body!r}"
    return None


@schema.parametrize()
@hypothesis.settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
                     suppress_health_check=list(hypothesis.HealthCheck))
def test_no_request_gets_a_server_error(case, api_url):
    _restore_seeded_rows()
    _aim_at_seeded_rows(case)
    response = case.call(base_url=api_url, headers=_auth_headers(), timeout=30)
    if response.status_code < 300:
        REACHED.add(f"{case.method} {case.path}")
    # Beside no 5xx and a message in every 4xx: 2xx and error bodies match what /openapi.json documents.
    case.validate_response(response, checks=[not_a_server_error, every_4xx_has_a_message,
                                             response_schema_conformance, content_type_conformance])


def test_the_fuzz_reached_the_handlers():
    """Guards the test above against passing vacuously (every request a 401 or a 404)."""
    if not REACHED:
        pytest.skip("runs after test_no_request_gets_a_server_error")
    expected = {"GET /v1/jobs/{job_id}", "GET /v1/jobs/{job_id}/events", "POST /v1/jobs/{job_id}/retry",
                "DELETE /v1/jobs/{job_id}", "GET /v1/documents/{document_id}/text", "POST /v1/documents",
                "GET /v1/datasets/{dataset_id}/export", "GET /v1/datasets/{dataset_id}/stats"}
    assert not expected - REACHED, f"never answered 2xx: {sorted(expected - REACHED)}"
