"""The admin UI's pages. Every page and action goes through the REST API's own service functions
(`submit_job`, `load_visible_job`, the cancel, retry and export routes as functions,
`store_document`), with the principal of the logged-in key, so what a key sees and may do here
is exactly what it sees and may do over REST.

Without keys (embedded mode on loopback) nobody logs in: everyone is the local admin, and a
banner says so. The CSRF token is checked on every POST either way.
"""
from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from agents.kinds import UnknownKind, all_kinds, get_kind, kind_names
from agents.redact import redact
from agents.status import FINISHED_STATUSES, JOB_STATUSES
from api.admin import charts
from api.admin.forms import form_fields, read_params
from api.admin.session import COOKIE, CSRF_FIELD, CSRF_HEADER, SessionSigner, UiSession
from api.auth import LOCAL_ADMIN, Principal
from api.routes import datasets as dataset_routes
from api.routes import jobs as job_routes
from api.routes import documents as document_routes
from api.routes.documents import store_document
from api.serialize import iso, job_json
from api.state import AppState, get_state
from db import repo

HERE = Path(__file__).parent
PAGE_SIZE = 50
VIEW_TYPES = ("text", "plan", "tree", "transcript", "flagged", "stats", "exports")
SECURITY_HEADERS = {
    # Scripts only from /admin/static: an injected inline <script> or on* attribute cannot run.
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                         undefined=jinja2.ChainableUndefined, trim_blocks=True, lstrip_blocks=True)
env.globals.update(bar_chart=charts.bar_chart, progress_bar=charts.progress_bar, view_types=VIEW_TYPES)
env.filters["pretty"] = lambda v: json.dumps(v, indent=2, ensure_ascii=False, sort_keys=True)
env.filters["when"] = lambda v: (iso(v) or "")[:19].replace("T", " ") if not isinstance(v, str) else v[:19].replace("T", " ")


def _is_mapping(value: Any) -> bool:
    return isinstance(value, dict)


def _is_list(value: Any) -> bool:
    return isinstance(value, list)


def _numeric_dict(value: Any) -> bool:
    return isinstance(value, dict) and bool(value) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value.values())


env.tests.update(mapping=_is_mapping, list=_is_list, numeric_dict=_numeric_dict)


# ---- session and principal ------------------------------------------------------------------


class Ui:
    """What a page knows of its visitor: the session, and the principal (None: not logged in)."""

    def __init__(self, request: Request, state: AppState, signer: SessionSigner):
        self.request, self.state, self.signer = request, state, signer
        self.keyless = not state.auth_required
        self.session = signer.loads(request.cookies.get(COOKIE)) or UiSession()
        self.principal: Principal | None = LOCAL_ADMIN if self.keyless else None
        self.key_name: str | None = None
        if not self.keyless and self.session.key_id:
            with state.db.reading() as session:
                row = repo.get_api_key(session, self.session.key_id)
                if row is not None:
                    self.principal = Principal(owner=row.id, is_admin=row.is_admin)
                    self.key_name = f"{row.name} ({row.prefix}…)"
            if self.principal is None:  # revoked since the login
                self.session.key_id = None
                self.session.dirty = True

    def finish(self, response: Response) -> Response:
        if self.session.dirty:
            response.set_cookie(
                COOKIE, self.signer.dumps(self.session), max_age=int(self.signer.max_age_s), path="/admin",
                httponly=True, samesite="strict", secure=self.request.url.scheme == "https",
            )
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    def render(self, template: str, status_code: int = 200, **context: Any) -> Response:
        context.update(ui=self, who=self.principal, csrf=self.session.csrf, csrf_field=CSRF_FIELD,
                       flash=self.session.take_flash() if not template.startswith("fragments/") else [],
                       kinds=kind_names(), statuses=JOB_STATUSES)
        return self.finish(HTMLResponse(env.get_template(template).render(**context), status_code=status_code))

    def redirect(self, url: str) -> Response:
        return self.finish(RedirectResponse(url, status_code=303))


class LoginRequired(Exception):
    pass


def mount(app: FastAPI, state: AppState) -> None:
    signer = SessionSigner(state.settings.admin_session_secret, state.settings.admin_session_hours * 3600)
    app.mount("/admin/static", StaticFiles(directory=HERE / "static"), name="admin-static")
    app.include_router(build_router(signer))

    @app.exception_handler(LoginRequired)
    async def _to_login(request: Request, _exc: LoginRequired):
        if request.headers.get("x-requested-with") == "fetch":
            return PlainTextResponse("log in again", status_code=401)
        return RedirectResponse("/admin/login", status_code=303)


def build_router(signer: SessionSigner) -> APIRouter:
    router = APIRouter(prefix="/admin", include_in_schema=False)

    def visitor(request: Request, state: AppState = Depends(get_state)) -> Ui:
        return Ui(request, state, signer)

    def user(ui: Ui = Depends(visitor)) -> Ui:
        if ui.principal is None:
            raise LoginRequired()
        return ui

    async def form_of(request: Request, ui: Ui) -> dict[str, Any]:
        """The POSTed form, after the CSRF check (403 when the token is missing or wrong)."""
        form = await request.form()
        token = form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER)
        if not ui.session.csrf_ok(token if isinstance(token, str) else None):
            raise HTTPException(403, "CSRF token missing or wrong: reload the page and try again")
        return form

    # ---- login ----

    @router.get("/login")
    def login_page(ui: Ui = Depends(visitor)):
        if ui.principal is not None:
            return ui.redirect("/admin/")
        return ui.render("login.html")

    @router.post("/login")
    async def login(request: Request, ui: Ui = Depends(visitor)):
        form = await form_of(request, ui)
        key = str(form.get("api_key") or "").strip()
        with ui.state.db.session() as session:
            row = repo.verify_api_key(session, key) if key else None
            key_id = row.id if row is not None else None
        if key_id is None:
            ui.session.say("invalid or revoked API key", "error")
            return ui.render("login.html", status_code=401)
        # A new session (and CSRF token) at login, so a token seen before cannot be replayed.
        ui.session = UiSession(key_id=key_id)
        return ui.redirect("/admin/")

    @router.post("/logout")
    async def logout(request: Request, ui: Ui = Depends(visitor)):
        await form_of(request, ui)
        ui.session = UiSession()
        ui.session.say("logged out")
        return ui.redirect("/admin/login")

    # ---- dashboard ----

    @router.get("/")
    async def dashboard(ui: Ui = Depends(user)):
        return ui.render("dashboard.html", **await dashboard_data(ui))

    @router.get("/fragments/dashboard")
    async def dashboard_fragment(ui: Ui = Depends(user)):
        return ui.render("fragments/dashboard.html", **await dashboard_data(ui))

    # ---- jobs ----

    @router.get("/jobs")
    def jobs_page(request: Request, ui: Ui = Depends(user)):
        return ui.render("jobs.html", **jobs_data(ui, request))

    @router.post("/jobs/cancel")
    async def bulk_cancel(request: Request, ui: Ui = Depends(user)):
        form = await form_of(request, ui)
        ids = [str(v) for v in form.getlist("job")][:1000]
        done, refused = 0, []
        for job_id in ids:
            try:
                job_routes.cancel(job_id, state=ui.state, who=ui.principal)
                done += 1
            except HTTPException as exc:
                refused.append(f"{job_id[:8]}: {exc.detail}")
        ui.session.say(f"cancel asked for {done} job(s)" + (f"; refused: {'; '.join(refused[:5])}" if refused else ""),
                       "info" if not refused else "warn")
        return ui.redirect(str(form.get("back") or "/admin/jobs") if str(form.get("back") or "").startswith("/admin/") else "/admin/jobs")

    @router.get("/jobs/{job_id}")
    def job_page(job_id: str, ui: Ui = Depends(user)):
        return ui.render("job.html", **job_data(ui, job_id))

    @router.get("/jobs/{job_id}/fragment")
    def job_fragment(job_id: str, ui: Ui = Depends(user)):
        return ui.render("fragments/job.html", **job_data(ui, job_id))

    @router.get("/jobs/{job_id}/events")
    def job_events(job_id: str, request: Request, ui: Ui = Depends(user)):
        """The job's SSE stream, as /v1/jobs/{id}/events sends it, for the session's principal."""
        with ui.state.db.reading() as session:
            job_routes.load_visible_job(session, job_id, ui.principal)
        last = request.headers.get("last-event-id", "")
        return job_routes.event_stream_response(ui.state, job_id, int(last) if last.isdigit() else 0, request)

    @router.get("/jobs/{job_id}/steps/{key:path}")
    def step_text(job_id: str, key: str, ui: Ui = Depends(user)):
        """A step's output, as the job's kind says to show it (a tree node's text)."""
        with ui.state.db.reading() as session:
            job = job_routes.load_visible_job(session, job_id, ui.principal)
            step = repo.step_by_key(session, job_id, key)
            if step is None:
                raise HTTPException(404, f"step {key} not found")
            output, kind = step.output, job.kind
        field = _kind_view(kind).node_step
        text = output.get(field) if field and isinstance(output, dict) else None
        return ui.render("fragments/step.html", key=key, text=text, output=output if text is None else None)

    @router.post("/jobs/{job_id}/cancel")
    async def cancel(job_id: str, request: Request, ui: Ui = Depends(user)):
        await form_of(request, ui)
        try:
            job_routes.cancel(job_id, state=ui.state, who=ui.principal)
            ui.session.say("cancel requested")
        except HTTPException as exc:
            if exc.status_code == 404:
                raise
            ui.session.say(str(exc.detail), "error")
        return ui.redirect(f"/admin/jobs/{job_id}")

    @router.post("/jobs/{job_id}/retry")
    async def retry(job_id: str, request: Request, ui: Ui = Depends(user)):
        form = await form_of(request, ui)
        mode = form.get("mode") or None
        if mode not in (None, "reuse", "fresh"):
            raise HTTPException(422, "mode must be reuse or fresh")
        try:
            job_routes.retry(job_id, job_routes.RetryRequest(mode=mode), state=ui.state, who=ui.principal)
            ui.session.say("queued again" + (f" (mode {mode})" if mode else ""))
        except HTTPException as exc:
            if exc.status_code == 404:
                raise
            detail = exc.detail.get("message") if isinstance(exc.detail, dict) else exc.detail
            ui.session.say(str(detail), "error")
        return ui.redirect(f"/admin/jobs/{job_id}")

    @router.post("/jobs/{job_id}/delete")
    async def delete_job(job_id: str, request: Request, ui: Ui = Depends(user)):
        await form_of(request, ui)
        try:
            job_routes.delete_visible_job(ui.state, job_id, ui.principal)
        except HTTPException as exc:
            if exc.status_code == 404:
                raise
            ui.session.say(str(exc.detail), "error")
            return ui.redirect(f"/admin/jobs/{job_id}")
        ui.session.say(f"job {job_id} deleted")
        return ui.redirect("/admin/jobs")

    @router.get("/jobs/{job_id}/export/{fmt}")
    def export(job_id: str, fmt: str, ui: Ui = Depends(user)):
        """A dataset export, from the same function as GET /v1/datasets/{id}/export."""
        return dataset_routes.export_dataset(job_id, format=fmt, state_length=None, state=ui.state, who=ui.principal)

    # ---- submit and documents ----

    @router.get("/submit")
    def submit_page(kind: str | None = None, ui: Ui = Depends(user)):
        return ui.render("submit.html", **submit_data(ui, kind, {}, []))

    @router.post("/submit")
    async def submit(request: Request, ui: Ui = Depends(user)):
        form = await form_of(request, ui)
        values = {k: v for k, v in form.items() if isinstance(v, str)}
        kind = values.get("kind", "")
        try:
            fields = form_fields(get_kind(kind).params.model_json_schema())
        except UnknownKind as exc:
            raise HTTPException(400, str(exc)) from None
        params, errors = read_params(fields, values)
        priority_raw = values.get("priority", "5").strip() or "5"
        if not priority_raw.isdigit() or not 0 <= int(priority_raw) <= 9:
            errors.append("priority must be a whole number from 0 to 9")
        if not errors:
            try:
                data, _created = job_routes.submit_job(ui.state, ui.principal, kind, params, int(priority_raw), None,
                                                       prompt_set=values.get("prompt_set") or None)
                ui.session.say(f"{kind} job {data['id']} queued")
                return ui.redirect(f"/admin/jobs/{data['id']}")
            except HTTPException as exc:
                errors.append(str(exc.detail))
        return ui.render("submit.html", status_code=422, **submit_data(ui, kind, values, errors))

    @router.get("/documents")
    def documents_page(ui: Ui = Depends(user)):
        with ui.state.db.reading() as session:
            docs = repo.list_documents(session, None if ui.principal.is_admin else ui.principal.owner, 100, 0)
            rows = [{"id": d.id, "name": d.name, "words": d.words, "tokens": d.tokens, "owner": d.owner,
                     "created_at": d.created_at} for d in docs]
        return ui.render("documents.html", documents=rows)

    @router.post("/documents")
    async def upload(request: Request, ui: Ui = Depends(user)):
        form = await form_of(request, ui)
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            ui.session.say("choose a file to upload", "error")
            return ui.redirect("/admin/documents")
        limit = ui.state.settings.max_document_bytes
        raw = await upload.read(limit + 1)
        if len(raw) > limit:
            ui.session.say(f"the file is over the limit of {limit} bytes", "error")
            return ui.redirect("/admin/documents")
        name = str(form.get("name") or upload.filename or "")[:300] or None
        try:
            doc, created = await asyncio.to_thread(store_document, ui.state, ui.principal, raw, name,
                                                   form.get("strip_gutenberg") == "on")
            ui.session.say(f"document {doc['id']} {'stored' if created else 'was already stored'} "
                           f"({doc['words']} words)")
        except HTTPException as exc:
            ui.session.say(str(exc.detail), "error")
        return ui.redirect("/admin/documents")

    @router.post("/documents/{document_id}/delete")
    async def delete_document(document_id: str, request: Request, ui: Ui = Depends(user)):
        await form_of(request, ui)
        try:
            document_routes.delete_document(document_id, state=ui.state, who=ui.principal)
            ui.session.say(f"document {document_id} deleted")
        except HTTPException as exc:
            if exc.status_code == 404:
                raise
            ui.session.say(str(exc.detail), "error")
        return ui.redirect("/admin/documents")

    return router


# ---- page data -------------------------------------------------------------------------------


def _scope(who: Principal) -> str | None:
    return None if who.is_admin else who.owner


def _kind_view(kind: str):
    try:
        return get_kind(kind).view
    except Exception:
        from agents.kinds import ResultView

        return ResultView()


_health_cache: dict[int, tuple[float, dict]] = {}


async def _model_health(state: AppState) -> dict:
    """The /readyz models check, kept 10 s (the dashboard refreshes every few seconds)."""
    from api.routes.ops import _check_models

    cached = _health_cache.get(id(state))
    if cached and time.monotonic() - cached[0] < 10:
        return cached[1]
    try:
        health = await _check_models(state)
    except Exception as exc:
        health = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    _health_cache[id(state)] = (time.monotonic(), health)
    return health


def _endpoint_rows(state: AppState, health: dict) -> list[dict[str, Any]]:
    """Each model endpoint: up (probe), and from this process's model client (when its worker
    runs here) requests in flight, errors and calls."""
    from agents.llm import metrics

    stats: dict[str, dict[str, float]] = {}

    def add(metric, field: str, *, label: str = "endpoint", skip_ok: bool = False) -> None:
        for family in metric.collect():
            for sample in family.samples:
                if sample.name.endswith("_created"):
                    continue
                endpoint = sample.labels.get(label, "")
                if skip_ok and sample.labels.get("outcome") == "ok":
                    field_name = "ok"
                else:
                    field_name = field
                row = stats.setdefault(endpoint, {})
                row[field_name] = row.get(field_name, 0) + sample.value

    add(metrics.INFLIGHT, "inflight")
    add(metrics.ENDPOINT_UP, "marked_up")
    add(metrics.ERRORS, "errors")
    add(metrics.REQUESTS, "failed_calls", skip_ok=True)
    probes = {p.get("endpoint"): p for p in health.get("endpoints", [])}
    names = list(dict.fromkeys(state.model_endpoints() + list(probes) + list(stats)))
    rows = []
    for name in names:
        probe = probes.get(name, {})
        own = stats.get(name, {})
        rows.append({
            "endpoint": redact(name),  # a URL may hold a password
            "up": probe.get("up", own.get("marked_up", 1) >= 1 if own else None),
            "inflight": int(own.get("inflight", 0)), "errors": int(own.get("errors", 0)),
            "ok": int(own.get("ok", 0)), "failed": int(own.get("failed_calls", 0)),
            "note": redact(probe.get("error") or ("" if own else "no calls from this process")),
        })
    return rows


async def dashboard_data(ui: Ui) -> dict[str, Any]:
    import asyncio

    state, owner = ui.state, _scope(ui.principal)
    now = datetime.now(timezone.utc)
    minutes = 30

    def read():
        with state.db.reading() as session:
            counts = repo.job_counts(session, owner)
            finished = repo.finished_per_minute(session, now - timedelta(hours=1), owner)
            tokens = repo.tokens_per_minute(session, now - timedelta(minutes=minutes), owner)
            running = [job_json(session, j, full=False, usage=dict(repo.NO_USAGE))
                       for j in repo.running_jobs(session, owner)]
            workers = repo.active_workers(session, now - timedelta(seconds=state.settings.job_lease_seconds))
        return counts, finished, tokens, running, workers

    counts, finished, tokens, running, workers = await asyncio.to_thread(read)
    this_minute = now.replace(second=0, microsecond=0)
    per_minute = [0] * minutes
    for at, _status, count in finished:
        age = int((this_minute - at).total_seconds() // 60)
        if 0 <= age < minutes:
            per_minute[minutes - 1 - age] += count
    tokens_per_minute = [0] * minutes
    for at, count in tokens:
        age = int((this_minute - at).total_seconds() // 60)
        if 0 <= age < minutes:
            tokens_per_minute[minutes - 1 - age] += count
    tps = [round(t / 60, 2) for t in tokens_per_minute]
    labels = [f"-{minutes - 1 - i} min" for i in range(minutes)]
    health = await _model_health(state)
    return {
        "counts": counts,
        "queued": counts.get("queued", 0),
        "running_count": counts.get("running", 0),
        "jobs_per_minute": round(sum(per_minute[-5:]) / 5, 2),
        "tokens_per_second": tps[-1] if tps else 0,
        "failures_hour": sum(count for _at, status, count in finished if status == "failed"),
        "jobs_chart": charts.bar_chart(per_minute, labels, title="jobs finished per minute, last 30 minutes"),
        "tokens_chart": charts.bar_chart(tps, labels, title="tokens per second (completion), last 30 minutes",
                                         unit=" tok/s", css="bar alt"),
        "running": running,
        "endpoints": _endpoint_rows(state, health) if ui.principal.is_admin else [],
        "model_health": health if ui.principal.is_admin else {},
        "workers": workers if ui.principal.is_admin else {},
        "generated": now,
    }


def _parse_date(value: str | None, end: bool = False) -> datetime | None:
    if not value:
        return None
    try:
        day = datetime.fromisoformat(value)
    except ValueError:
        return None
    if day.tzinfo is None:
        day = day.replace(tzinfo=timezone.utc)
    return day + timedelta(days=1) if end and len(value) <= 10 else day


def jobs_data(ui: Ui, request: Request) -> dict[str, Any]:
    q = request.query_params
    kinds = [k for k in q.getlist("kind") if k]
    statuses = [s for s in q.getlist("status") if s in JOB_STATUSES]
    owner = _scope(ui.principal)
    if ui.principal.is_admin and q.get("owner"):
        owner = q.get("owner")
    sort = q.get("sort") if q.get("sort") in repo.JOB_SORTS else "created"
    descending = q.get("dir", "desc") != "asc"
    try:
        page = max(int(q.get("page", "1")), 1)
    except ValueError:
        page = 1
    text = (q.get("q") or "").strip()[:200]
    with ui.state.db.reading() as session:
        jobs, total = repo.search_jobs(
            session, owner=owner, kinds=kinds, statuses=statuses, created_from=_parse_date(q.get("from")),
            created_to=_parse_date(q.get("to"), end=True), text=text or None, sort=sort, descending=descending,
            limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE,
        )
        rows = []
        for job in jobs:
            params = job.params or {}
            about = next((params[k] for k in ("instruction", "question", "document_id", "recipe")
                          if isinstance(params.get(k), str)), "")
            rows.append({"id": job.id, "kind": job.kind, "status": job.status, "progress": job.progress or 0.0,
                         "owner": job.owner, "created_at": job.created_at, "finished_at": job.finished_at,
                         "about": about[:140]})
    base = [(k, v) for k, v in q.multi_items() if k not in ("page", "sort", "dir")]

    def link(**changes: Any) -> str:
        params = dict(sort=sort, dir="desc" if descending else "asc", page=page)
        params.update(changes)
        return "/admin/jobs?" + urlencode(base + [(k, str(v)) for k, v in params.items()])

    sort_links = {name: link(sort=name, dir="asc" if sort == name and descending else "desc", page=1)
                  for name in repo.JOB_SORTS}
    pages = max((total + PAGE_SIZE - 1) // PAGE_SIZE, 1)
    return {
        "jobs": rows, "total": total, "page": page, "pages": pages, "sort": sort, "descending": descending,
        "sort_links": sort_links, "prev_link": link(page=page - 1) if page > 1 else None,
        "next_link": link(page=page + 1) if page < pages else None,
        "filters": {"kind": kinds, "status": statuses, "owner": q.get("owner", ""), "from": q.get("from", ""),
                    "to": q.get("to", ""), "q": text},
        "back": str(request.url.path) + ("?" + request.url.query if request.url.query else ""),
    }


def _step_rows(steps) -> list[dict[str, Any]]:
    return [{"key": s.key, "status": s.status, "attempt": s.attempt, "calls": s.calls or 0,
             "prompt_tokens": s.prompt_tokens or 0, "completion_tokens": s.completion_tokens or 0,
             "cached_tokens": s.cached_tokens or 0, "latency_s": round(s.latency_s or 0.0, 3),
             "finish_reason": s.finish_reason, "model": s.model, "error": s.error} for s in steps]


def _live_parts(session, job_id: str, view) -> dict[str, Any]:
    """A running job's partial result, where its kind's view says it is in the steps."""
    live: dict[str, Any] = {}
    if view.plan_step and "." in view.plan_step:
        key, field = view.plan_step.split(".", 1)
        step = repo.step_by_key(session, job_id, key)
        if step is not None and step.status == "succeeded" and isinstance(step.output, dict):
            if isinstance(step.output.get(field), list):
                live["plan"] = step.output[field]
    if view.parts_step and "*." in view.parts_step:
        prefix, field = view.parts_step.split("*.", 1)
        steps = repo.steps_with_prefix(session, job_id, prefix)

        def order(s):
            tail = s.key[len(prefix):]
            return (0, int(tail)) if tail.isdigit() else (1, tail)

        live["parts"] = [s.output.get(field) for s in sorted(steps, key=order)
                         if isinstance(s.output, dict) and isinstance(s.output.get(field), str)]
    return live


def job_data(ui: Ui, job_id: str) -> dict[str, Any]:
    with ui.state.db.reading() as session:
        job_row = job_routes.load_visible_job(session, job_id, ui.principal)
        job = job_json(session, job_row)
        steps = _step_rows(repo.list_steps(session, job_id))
        view = _kind_view(job["kind"])
        live = _live_parts(session, job_id, view) if job["status"] != "succeeded" else {}
        children = repo.children_status(session, job_id)
    result = job["result"] if isinstance(job["result"], dict) else None
    views = []
    for view_type in VIEW_TYPES:
        field = getattr(view, view_type)
        if field and result is not None and result.get(field) is not None:
            views.append((view_type, field, result[field]))
    if result is None:
        if live.get("plan"):
            views.append(("plan", "plan (so far)", live["plan"]))
        if live.get("parts"):
            views.append(("text", "written so far", live["parts"]))
    detail = job.get("progress_detail") or {}
    shown = steps[-300:]
    timeline = {
        "tokens": charts.bar_chart([s["completion_tokens"] for s in shown], [s["key"] for s in shown],
                                   title="completion tokens per step", width=600, height=70),
        "latency": charts.bar_chart([s["latency_s"] for s in shown], [s["key"] for s in shown],
                                    title="latency per step (s)", unit=" s", width=600, height=70, css="bar alt"),
        "cached": sum(s["cached_tokens"] for s in steps),
        "retries": sum(max(s["attempt"] - 1, 0) for s in steps),
    }
    return {
        "job": job, "steps": steps, "views": views, "timeline": timeline, "children": children,
        "finished": job["status"] in FINISHED_STATUSES, "retryable": job["status"] in ("failed", "cancelled"),
        "detail": detail, "other_result": result if not views and result is not None else None,
    }


def submit_data(ui: Ui, kind: str | None, values: dict[str, str], errors: list[str]) -> dict[str, Any]:
    kinds = {k.name: k for k in all_kinds()}
    chosen = kinds.get(kind or "")
    fields = form_fields(chosen.params.model_json_schema()) if chosen else []
    documents = []
    if chosen and any(f.name == "document_id" for f in fields):
        with ui.state.db.reading() as session:
            documents = [{"id": d.id, "name": d.name or d.id, "words": d.words}
                         for d in repo.list_documents(session, ui.principal.owner, 100, 0)]
    return {"kind_list": [(k.name, k.description) for k in kinds.values()], "chosen": chosen, "fields": fields,
            "values": values, "errors": errors, "documents": documents}
