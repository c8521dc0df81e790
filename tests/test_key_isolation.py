"""Key isolation, route by route: a key never sees or touches another key's jobs, documents,
datasets or events, over REST and in the admin UI.

Key A owns a finished chat job (steps, events), a dataset build with child jobs, a failed job, a
queued job and two documents. Key B has its own job and document, so its listings are not empty
by accident. Every route of the app is in ROUTES with how it is checked; a new route that is not
in the table fails `test_every_route_is_in_the_table`. For a route naming an owned resource, B
gets 404 for A's id, exactly as for an id that does not exist (not 403: nothing tells B that A's
resource exists), and an autouse fixture checks after every test that nothing of A changed.
"""
from __future__ import annotations

import contextlib
import json
import re
import uuid
from typing import Any, Iterator

import httpx
import pytest
from sqlalchemy import func, select

from agents.settings import Settings
from api.admin.session import COOKIE, CSRF_FIELD, SessionSigner
from api.app import create_app
from db import repo
from db.models import Document, Job, JobEvent, Step
from db.session import Database
from tests.api_server import running_api, wait_for_job
from tests.db_fixtures import sqlite_url

SESSION_SECRET = "isolation-test-session-secret-0123456789"
A_WORD = "Quetzalcoatlus"  # only in A's instructions and document: B must never see it
A_TEXT = f"{A_WORD} was a giant pterosaur.\n\nIt lived in the late Cretaceous of North America."
A_JSONL = json.dumps({"instruction": f"Write about {A_WORD}.", "response": "It flew over the plains. " * 20})
B_TEXT = "Tides rise and fall twice a day.\n\nThe moon pulls the sea."
CHAT = {"kind": "chat", "params": {"messages": [{"role": "user", "content": f"Tell me about {A_WORD}."}]}}


def walk_routes(routes, prefix: str = "") -> set[tuple[str, str]]:
    """(method, path) of every route, through included routers (FastAPI may keep them nested);
    a mounted app (static files) is ("MOUNT", path)."""
    found: set[tuple[str, str]] = set()
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            context = getattr(route, "include_context", None)
            found |= walk_routes(inner.routes, prefix + (getattr(context, "prefix", "") or ""))
        elif getattr(route, "methods", None):
            found |= {(method, prefix + route.path) for method in route.methods - {"HEAD"}}
        else:
            found.add(("MOUNT", prefix + route.path))
    return found


# ---- the world: keys, A's resources, B's resources, a live API ----------------------------------


class World:
    def __init__(self, settings: Settings, url: str, keys: dict[str, str], owners: dict[str, str], ids: dict[str, Any]):
        self.settings, self.url, self.keys, self.owners, self.ids = settings, url, keys, owners, ids
        self.db = Database(settings.database_url)
        self.signer = SessionSigner(SESSION_SECRET, 3600)

    def rest(self, who: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.keys[who]}"}, timeout=30)

    @contextlib.contextmanager
    def ui(self, who: str) -> Iterator[httpx.Client]:
        """A logged-in admin UI session of key `who` (cookie jar), through the login form."""
        with httpx.Client(base_url=self.url, timeout=30) as client:
            assert client.get("/admin/login").status_code == 200
            response = client.post("/admin/login", data={"api_key": self.keys[who], CSRF_FIELD: self.csrf(client)})
            assert response.status_code == 303, response.text
            yield client

    def csrf(self, client: httpx.Client) -> str:
        return self.signer.loads(client.cookies.get(COOKIE)).csrf

    def a_ids(self) -> set[str]:
        """Every id of A's: jobs (children included) and documents."""
        with self.db.reading() as session:
            jobs = session.scalars(select(Job.id).where(Job.owner == self.owners["a"])).all()
            docs = session.scalars(select(Document.id).where(Document.owner == self.owners["a"])).all()
        return set(jobs) | set(docs)

    def snapshot(self) -> dict[str, Any]:
        """What A has: every job's state, result and error, step and event counts, every document."""
        owner = self.owners["a"]
        with self.db.reading() as session:
            jobs = {j.id: (j.status, j.cancel_requested, j.error, json.dumps(j.result, sort_keys=True), j.progress,
                           j.priority, j.max_calls, j.finished_at)
                    for j in session.scalars(select(Job).where(Job.owner == owner))}
            steps = dict(session.execute(select(Step.job_id, func.count()).join(Job, Job.id == Step.job_id)
                                         .where(Job.owner == owner).group_by(Step.job_id)).all())
            events = dict(session.execute(select(JobEvent.job_id, func.count()).join(Job, Job.id == JobEvent.job_id)
                                          .where(Job.owner == owner).group_by(JobEvent.job_id)).all())
            docs = {d.id: (d.sha256, d.name, d.bytes) for d in session.scalars(select(Document).where(Document.owner == owner))}
        return {"jobs": jobs, "steps": steps, "events": events, "documents": docs}


@pytest.fixture(scope="module")
def world(tmp_path_factory, fake_llm_session):
    if not fake_llm_session.alive:
        fake_llm_session.restart()
    fake_llm_session.reset(config=True)
    tmp = tmp_path_factory.mktemp("isolation")
    settings = Settings(
        longform_data_dir=str(tmp), database_url=sqlite_url(tmp), llm_endpoints=fake_llm_session.base_url,
        require_api_keys="always", admin_session_secret=SESSION_SECRET, llm_max_retries=0,
    )
    db = Database(settings.database_url)
    with db.session() as s:
        keys, owners = {}, {}
        for who, admin in (("a", False), ("b", False), ("admin", True)):
            keys[who], row = repo.create_api_key(s, f"key-{who}", is_admin=admin)
            owners[who] = row.id
    ids: dict[str, Any] = {}
    # Phase 1, with the worker: A's (and B's) finished jobs, made the way a user makes them.
    with running_api(settings) as url:
        w = World(settings, url, keys, owners, ids)
        with w.rest("a") as a, w.rest("b") as b:
            ids["doc"] = a.post("/v1/documents", content=A_TEXT.encode(), params={"name": f"{A_WORD}.txt"},
                                headers={"Content-Type": "text/plain"}).json()["id"]
            ids["jsonl_doc"] = a.post("/v1/documents", content=A_JSONL.encode(), params={"name": "pairs.jsonl"},
                                      headers={"Content-Type": "text/plain"}).json()["id"]
            ids["job"] = a.post("/v1/jobs", json=CHAT, headers={"Idempotency-Key": "shared-key"}).json()["id"]
            ids["dataset"] = a.post("/v1/datasets", json={
                "items": [{"instruction": f"Write a short story about {A_WORD}.", "target_words": 200},
                          {"instruction": f"Write a short essay about {A_WORD}.", "target_words": 200}]}).json()["id"]
            assert wait_for_job(a, ids["job"])["status"] == "succeeded"
            assert wait_for_job(a, ids["dataset"], timeout=120)["status"] == "succeeded"
            ids["children"] = [j["id"] for j in a.get("/v1/jobs", params={"parent_id": ids["dataset"]}).json()["items"]]
            assert ids["children"]
            ids["b_doc"] = b.post("/v1/documents", content=B_TEXT.encode(), headers={"Content-Type": "text/plain"}).json()["id"]
            ids["b_job"] = b.post("/v1/jobs", json={"kind": "chat", "params": {"messages": [
                {"role": "user", "content": "Tides?"}]}}).json()["id"]
            assert wait_for_job(b, ids["b_job"])["status"] == "succeeded"
    # A failed job (as if its model server had refused it), for the retry routes.
    with db.session() as s:
        failed, _ = repo.create_job(s, "chat", CHAT["params"], owner=owners["a"])
        failed.status, failed.error = "failed", "LLMServerError: HTTP 500"
        s.flush()
        ids["failed"] = failed.id
    # Phase 2, without a worker: A's queued job stays queued, so a cancel by B would show.
    with running_api(settings, run_worker=False) as url:
        w = World(settings, url, keys, owners, ids)
        with w.rest("a") as a:
            ids["queued"] = a.post("/v1/jobs", json={**CHAT, "priority": 9}).json()["id"]
        yield w


@pytest.fixture(autouse=True)
def a_unchanged(world):
    """Whatever B did in a test, every job, step, event and document of A is as it was."""
    before = world.snapshot()
    yield
    assert world.snapshot() == before


# ---- the routes, and how each is checked ---------------------------------------------------------

FOREIGN = "foreign"  # names an owned resource: B gets 404 for A's id, as for a missing one
LISTING = "listing"  # lists owned resources: none of A's in B's answer
CREATE = "create"  # makes a resource: refused when it names A's; B's idempotency keys are B's own
OPEN = "open"  # owns nothing (operations, docs, kinds, static files, login): still shows none of A's
ADMIN_ONLY = "admin-only"  # a non-admin key gets 403

# (method, path) -> (kind, which of A's ids fills the path, the request's extra arguments)
ROUTES: dict[tuple[str, str], tuple[str, dict[str, str], dict[str, Any]]] = {
    ("GET", "/openapi.json"): (OPEN, {}, {}),
    ("GET", "/docs"): (OPEN, {}, {}),
    ("GET", "/docs/oauth2-redirect"): (OPEN, {}, {}),
    ("GET", "/redoc"): (OPEN, {}, {}),
    ("GET", "/healthz"): (OPEN, {}, {}),
    ("GET", "/readyz"): (OPEN, {}, {}),
    ("GET", "/metrics"): (OPEN, {}, {}),
    ("GET", "/v1/kinds"): (OPEN, {}, {}),
    ("GET", "/v1/prompts"): (OPEN, {}, {}),
    ("MOUNT", "/admin/static"): (OPEN, {}, {}),
    ("GET", "/admin/login"): (OPEN, {}, {}),
    ("POST", "/admin/login"): (OPEN, {}, {}),
    ("POST", "/admin/logout"): (OPEN, {}, {}),
    ("POST", "/v1/purge"): (ADMIN_ONLY, {}, {"params": {"older_than_days": 0.0001}}),
    # REST: one resource
    ("GET", "/v1/jobs/{job_id}"): (FOREIGN, {"job_id": "job"}, {}),
    ("POST", "/v1/jobs/{job_id}/cancel"): (FOREIGN, {"job_id": "queued"}, {}),
    ("DELETE", "/v1/jobs/{job_id}"): (FOREIGN, {"job_id": "job"}, {}),
    ("POST", "/v1/jobs/{job_id}/retry"): (FOREIGN, {"job_id": "failed"}, {"json": {"mode": "fresh"}}),
    ("GET", "/v1/jobs/{job_id}/steps"): (FOREIGN, {"job_id": "job"}, {"params": {"with_output": "true"}}),
    ("GET", "/v1/jobs/{job_id}/events"): (FOREIGN, {"job_id": "job"}, {}),
    ("GET", "/v1/documents/{document_id}"): (FOREIGN, {"document_id": "doc"}, {}),
    ("GET", "/v1/documents/{document_id}/text"): (FOREIGN, {"document_id": "doc"}, {}),
    ("DELETE", "/v1/documents/{document_id}"): (FOREIGN, {"document_id": "doc"}, {}),
    ("GET", "/v1/datasets/{dataset_id}"): (FOREIGN, {"dataset_id": "dataset"}, {}),
    ("DELETE", "/v1/datasets/{dataset_id}"): (FOREIGN, {"dataset_id": "dataset"}, {}),
    ("GET", "/v1/datasets/{dataset_id}/export"): (FOREIGN, {"dataset_id": "dataset"}, {}),
    ("GET", "/v1/datasets/{dataset_id}/stats"): (FOREIGN, {"dataset_id": "dataset"}, {}),
    # REST: listings and creation
    ("GET", "/v1/jobs"): (LISTING, {}, {}),
    ("GET", "/v1/documents"): (LISTING, {}, {}),
    ("POST", "/v1/jobs"): (CREATE, {}, {}),
    ("POST", "/v1/documents"): (CREATE, {}, {}),
    ("POST", "/v1/datasets"): (CREATE, {}, {}),
    # Admin UI, with B's session
    ("GET", "/admin/jobs/{job_id}"): (FOREIGN, {"job_id": "job"}, {}),
    ("GET", "/admin/jobs/{job_id}/fragment"): (FOREIGN, {"job_id": "job"}, {}),
    ("GET", "/admin/jobs/{job_id}/events"): (FOREIGN, {"job_id": "job"}, {}),
    ("GET", "/admin/jobs/{job_id}/steps/{key:path}"): (FOREIGN, {"job_id": "job", "key:path": "=chat"}, {}),
    ("POST", "/admin/jobs/{job_id}/cancel"): (FOREIGN, {"job_id": "queued"}, {}),
    ("POST", "/admin/jobs/{job_id}/retry"): (FOREIGN, {"job_id": "failed"}, {"data": {"mode": "fresh"}}),
    ("POST", "/admin/jobs/{job_id}/delete"): (FOREIGN, {"job_id": "job"}, {}),
    ("GET", "/admin/jobs/{job_id}/export/{fmt}"): (FOREIGN, {"job_id": "dataset", "fmt": "=longwriter"}, {}),
    ("POST", "/admin/documents/{document_id}/delete"): (FOREIGN, {"document_id": "doc"}, {}),
    ("GET", "/admin/"): (LISTING, {}, {}),
    ("GET", "/admin/fragments/dashboard"): (LISTING, {}, {}),
    ("GET", "/admin/jobs"): (LISTING, {}, {}),
    ("GET", "/admin/documents"): (LISTING, {}, {}),
    ("GET", "/admin/submit"): (LISTING, {}, {}),
    ("POST", "/admin/jobs/cancel"): (CREATE, {}, {}),  # a bulk action: checked with A's ids below
    ("POST", "/admin/submit"): (CREATE, {}, {}),
    ("POST", "/admin/documents"): (CREATE, {}, {}),
}


def test_every_route_is_in_the_table(world):
    """A new endpoint fails here until its isolation is checked (added to ROUTES)."""
    app = create_app(world.settings, run_worker=False)
    assert walk_routes(app.routes) == set(ROUTES)


def fill(world: World, path: str, binding: dict[str, str], ids: dict[str, Any] | None = None) -> str:
    ids = world.ids if ids is None else ids
    for name, source in binding.items():
        value = source[1:] if source.startswith("=") else ids[source]
        path = path.replace("{" + name + "}", value)
    return path


def send(world: World, client: httpx.Client, method: str, path: str, extra: dict[str, Any]) -> httpx.Response:
    extra = dict(extra)
    if path.startswith("/admin/") and method == "POST":
        extra["data"] = {**extra.get("data", {}), CSRF_FIELD: world.csrf(client)}
    return client.request(method, path, **extra)


FOREIGN_ROUTES = sorted(r for r, spec in ROUTES.items() if spec[0] == FOREIGN)


@pytest.mark.parametrize("route", FOREIGN_ROUTES, ids=[f"{m} {p}" for m, p in FOREIGN_ROUTES])
def test_another_keys_resource_is_not_found(world, route):
    method, template = route
    _kind, binding, extra = ROUTES[route]
    with (world.ui("b") if template.startswith("/admin/") else world.rest("b")) as client:
        foreign = send(world, client, method, fill(world, template, binding), extra)
        missing_ids = {name: f"nope{uuid.uuid4().hex[:8]}" for name in world.ids}
        missing = send(world, client, method, fill(world, template, binding, missing_ids), extra)
    assert foreign.status_code == 404, (route, foreign.status_code, foreign.text[:300])
    # Word for word what a missing id gets, the id aside: nothing tells B that A's exists.
    for name, source in binding.items():
        if not source.startswith("="):
            assert foreign.text.replace(world.ids[source], "ID") == missing.text.replace(missing_ids[source], "ID")
    assert missing.status_code == 404
    assert A_WORD not in foreign.text


GET_FOREIGN = [r for r in FOREIGN_ROUTES if r[0] == "GET"]


@pytest.mark.parametrize("route", GET_FOREIGN, ids=[f"{m} {p}" for m, p in GET_FOREIGN])
def test_the_owner_and_an_admin_key_do_see_it(world, route):
    """The same requests succeed for A and for the admin key (admin keys see every job): the 404s
    above are about the key, not about a wrong path."""
    method, template = route
    _kind, binding, extra = ROUTES[route]
    for who in ("a", "admin"):
        with (world.ui(who) if template.startswith("/admin/") else world.rest(who)) as client:
            response = send(world, client, method, fill(world, template, binding), extra)
        assert response.status_code == 200, (who, route, response.text[:300])


def assert_none_of_a(world: World, text: str, where: str) -> None:
    leaked = [i for i in world.a_ids() if i in text]
    assert not leaked, f"{where} shows A's {leaked}"
    if f"q={A_WORD}" not in where:  # a search page echoes the words B typed
        assert A_WORD not in text, f"{where} shows A's text"


def test_rest_listings_hold_only_the_keys_own(world):
    a_jobs = {world.ids["job"], world.ids["dataset"], world.ids["failed"], world.ids["queued"], *world.ids["children"]}
    with world.rest("b") as b, world.rest("admin") as admin:
        for params in ({}, {"status": "succeeded"}, {"status": "queued"}, {"status": "failed"}, {"kind": "chat"},
                       {"kind": "dataset"}, {"kind": "write"}, {"parent_id": world.ids["dataset"]}, {"limit": 500}):
            body = b.get("/v1/jobs", params=params).json()
            assert {j["id"] for j in body["items"]} <= {world.ids["b_job"]}, params
            assert body["total"] == len(body["items"]), params  # the total counts B's jobs only
            assert_none_of_a(world, json.dumps(body), f"GET /v1/jobs {params}")
        docs = b.get("/v1/documents").json()
        assert [d["id"] for d in docs["items"]] == [world.ids["b_doc"]]
        # An admin key lists everyone's (README: an admin key sees and acts on every job).
        everyone = {j["id"] for j in admin.get("/v1/jobs", params={"limit": 500}).json()["items"]}
        assert a_jobs | {world.ids["b_job"]} <= everyone
        assert {world.ids["doc"], world.ids["b_doc"]} <= {d["id"] for d in admin.get("/v1/documents").json()["items"]}
        children = admin.get("/v1/jobs", params={"parent_id": world.ids["dataset"]}).json()["items"]
        assert {j["id"] for j in children} == set(world.ids["children"])


def test_admin_ui_listings_hold_only_the_sessions_own(world):
    with world.ui("b") as b:
        for path in ("/admin/", "/admin/fragments/dashboard", "/admin/documents", "/admin/submit?kind=summarize",
                     "/admin/jobs", f"/admin/jobs?q={A_WORD}", f"/admin/jobs?owner={world.owners['a']}",
                     "/admin/jobs?kind=dataset", "/admin/jobs?status=queued", "/admin/jobs?status=failed"):
            response = b.get(path)
            assert response.status_code == 200, (path, response.text[:300])
            assert_none_of_a(world, response.text, path)
        assert world.ids["b_job"] in b.get("/admin/jobs").text  # B's own job is listed
        assert world.ids["b_doc"] in b.get("/admin/documents").text
    with world.ui("admin") as admin:  # the owner filter is an admin's
        page = admin.get(f"/admin/jobs?owner={world.owners['a']}").text
        assert world.ids["job"] in page and world.ids["b_job"] not in page


def test_rest_creation_cannot_reference_or_reuse_anothers(world):
    with world.rest("b") as b:
        refused = [
            b.post("/v1/jobs", json={"kind": "summarize", "params": {"document_id": world.ids["doc"]}}),
            b.post("/v1/jobs", json={"kind": "booookscore", "params": {"job_id": world.ids["job"]}}),
            b.post("/v1/jobs", json={"kind": "booookscore", "params": {"document_id": world.ids["doc"]}}),
            b.post("/v1/datasets", json={"recipe": "ruler-mlt", "document_id": world.ids["jsonl_doc"]}),
            b.post("/v1/datasets", json={"document_id": world.ids["jsonl_doc"]}),
        ]
        for response in refused:
            assert response.status_code == 404, response.text
            assert "not found" in response.json()["detail"] and A_WORD not in response.text
        # The same Idempotency-Key as A's: a new job of B's, not A's.
        mine = b.post("/v1/jobs", json=CHAT, headers={"Idempotency-Key": "shared-key"})
        assert mine.status_code == 202 and mine.json()["id"] != world.ids["job"]
        # The same text as A's document: B's own copy (documents are stored once per owner).
        copy = b.post("/v1/documents", content=A_TEXT.encode(), headers={"Content-Type": "text/plain"})
        assert copy.status_code == 201 and copy.json()["id"] != world.ids["doc"]
        # Tidy up B's own (A's snapshot does not include them).
        b.post(f"/v1/jobs/{mine.json()['id']}/cancel")
        assert b.delete(f"/v1/documents/{copy.json()['id']}").status_code == 204


def test_admin_ui_actions_cannot_reference_anothers(world):
    with world.ui("b") as b:
        bulk = b.post("/admin/jobs/cancel", data={"job": [world.ids["queued"], world.ids["job"]], CSRF_FIELD: world.csrf(b)})
        assert bulk.status_code == 303
        flash = b.get("/admin/jobs").text
        assert "cancel asked for 0 job(s)" in flash and "not found" in flash
        with world.db.reading() as session:
            before = session.scalar(select(func.count()).select_from(Job))
        submit = b.post("/admin/submit", data={"kind": "summarize", "p.document_id": world.ids["doc"], CSRF_FIELD: world.csrf(b)})
        errors = re.findall(r'<div class="flash error">(.*?)</div>', submit.text, re.S)
        assert submit.status_code == 422 and f"document {world.ids['doc']} not found" in " ".join(errors), errors
        with world.db.reading() as session:
            assert session.scalar(select(func.count()).select_from(Job)) == before
        upload = b.post("/admin/documents", data={CSRF_FIELD: world.csrf(b)},
                        files={"file": ("same.txt", A_TEXT.encode(), "text/plain")})
        assert upload.status_code == 303
        with world.db.reading() as session:
            copies = session.scalars(select(Document).where(Document.owner == world.owners["b"],
                                                            Document.name == "same.txt")).all()
            assert len(copies) == 1 and copies[0].id != world.ids["doc"]
            copy_id = copies[0].id
        with world.rest("b") as rest:
            assert rest.delete(f"/v1/documents/{copy_id}").status_code == 204


def test_open_routes_show_nothing_of_anothers(world):
    with world.rest("b") as b:
        for method, path in [r for r, spec in ROUTES.items() if spec[0] == OPEN and r[0] == "GET"]:
            response = b.get(path)
            assert response.status_code in (200, 503), (path, response.status_code)
            assert_none_of_a(world, response.text, path)
        assert b.get("/admin/static/admin.js").status_code == 200
    with world.ui("b") as b:  # POST /admin/login (in ui()) and /admin/logout
        assert b.post("/admin/logout", data={CSRF_FIELD: world.csrf(b)}).status_code == 303
        assert b.get("/admin/jobs").status_code == 303  # logged out: back to the login page


def test_purge_needs_an_admin_key(world):
    method, path = ("POST", "/v1/purge")
    with world.rest("b") as b:
        response = b.post(path, params=ROUTES[(method, path)][2]["params"])
    assert response.status_code == 403 and "admin" in response.json()["detail"]


def test_a_key_with_neither_header_nor_session_gets_nothing(world):
    """Without a key every /v1 route is 401 and every admin page sends to the login."""
    with httpx.Client(base_url=world.url, timeout=30) as anonymous:
        for method, template in ROUTES:
            kind, binding, extra = ROUTES[(method, template)]
            if kind == OPEN or method == "MOUNT":
                continue
            path = fill(world, template, binding)
            response = anonymous.request(method, path, **extra)
            if template.startswith("/v1/"):
                assert response.status_code == 401, (method, path, response.status_code)
            else:
                assert response.status_code in (303, 403), (method, path, response.status_code)  # login, or CSRF
            assert A_WORD not in response.text
