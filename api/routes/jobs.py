"""Jobs: submit, list, get, cancel, retry, steps, live events (Server-Sent Events)."""
from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Literal

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field

import prompts
from agents import fingerprints
from agents.kinds import InvalidParams, UnknownKind, all_kinds, get_kind, kind_names, validate_params
from agents.status import FINISHED_STATUSES, JOB_STATUSES
from agents.text import unstorable_text
from api.auth import Principal, principal
from api.schemas import Job as JobOut
from api.schemas import JobList, KindList, StepList
from api.serialize import job_json, step_json
from api.served_models import UnservedModel
from api.state import AppState, get_state
from db import deletion, repo
from db.models import Job

router = APIRouter(prefix="/v1", tags=["jobs"])
log = logging.getLogger("longform.api")

MAX_CAP = 2**31 - 1  # a budget cap is stored in a 32-bit integer column
BUDGET_FIELDS = ("max_calls", "max_tokens_total")


def check_budget_value(name: str, value: Any) -> int | None:
    """A cap from a body that is not a pydantic model (datasets): None, or 0..MAX_CAP (422 otherwise)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_CAP:
        raise HTTPException(422, f"invalid request: {name}: must be an integer from 0 (unlimited) to {MAX_CAP}")
    return value


def resolve_budget(settings, max_calls: int | None, max_tokens_total: int | None) -> dict[str, int | None]:
    """The caps a new job gets: those asked for, else the settings' defaults; 0 means unlimited (None)."""
    calls = settings.job_max_calls if max_calls is None else max_calls
    tokens = settings.job_max_tokens_total if max_tokens_total is None else max_tokens_total
    return {"max_calls": calls or None, "max_tokens_total": tokens or None}


class JobRequest(BaseModel):
    kind: str = Field(description=f"one of: {', '.join(kind_names())} (GET /v1/kinds lists them with their params)")
    params: dict[str, Any] = Field(default_factory=dict)
    priority: int = Field(default=5, ge=0, le=9, description="0 is served first, 9 last")
    prompt_set: str | None = Field(
        default=None, max_length=100,
        description="a named prompt set installed on the server (PROMPT_SETS_DIR/NAME; GET /v1/prompts lists "
                    "them): its files replace the bundled templates of the same name for this job and its children",
    )
    max_calls: int | None = Field(
        default=None, ge=0, le=MAX_CAP, strict=True,
        description="budget: the most model calls the job may make (0: unlimited; default: JOB_MAX_CALLS); "
                    "past it the job fails with the reason and keeps its finished steps",
    )
    max_tokens_total: int | None = Field(
        default=None, ge=0, le=MAX_CAP, strict=True,
        description="budget: the most prompt + completion tokens the job may use (0: unlimited; default: "
                    "JOB_MAX_TOKENS_TOTAL); checked before each call, so the last call may overshoot it by its size",
    )


def check_prompt_set(state: AppState, prompt_set: str | None) -> None:
    """An unknown prompt set is refused at submit time (422), naming the installed ones."""
    if prompt_set is not None:
        try:
            state.settings.prompt_overlay(prompt_set)
        except prompts.UnknownPromptSet as exc:
            raise HTTPException(422, str(exc)) from None


def submit_job(
    state: AppState, who: Principal, kind: str, params: dict[str, Any], priority: int,
    idempotency_key: str | None, parent_id: str | None = None, prompt_set: str | None = None,
    max_calls: int | None = None, max_tokens_total: int | None = None,
) -> tuple[dict[str, Any], bool]:
    """Validate, store and queue a job. Returns its JSON and whether it is new. The budget caps
    (None: the settings' defaults, 0: unlimited) are resolved here and stored with the job."""
    # A NUL or a lone surrogate would be stored and then fail every response (and PostgreSQL).
    if problem := unstorable_text(params, "params"):
        raise HTTPException(422, problem)
    try:
        model = validate_params(kind, params, state.settings)
    except UnknownKind as exc:
        raise HTTPException(400, str(exc)) from None
    except InvalidParams as exc:
        raise HTTPException(422, str(exc)) from None
    if state.served_models is not None:
        try:
            state.served_models.check(model)
        except UnservedModel as exc:
            raise HTTPException(422, str(exc)) from None
    check_prompt_set(state, prompt_set)
    if idempotency_key is not None and not 0 < len(idempotency_key) <= 200:
        raise HTTPException(400, "Idempotency-Key must be 1 to 200 characters")
    with state.db.session() as session:
        _check_references(session, who, model)
        try:
            job, created = repo.create_job(
                session, kind, model.model_dump(mode="json"), owner=who.owner, priority=priority,
                idempotency_key=idempotency_key, parent_id=parent_id, prompt_set=prompt_set,
                **resolve_budget(state.settings, max_calls, max_tokens_total),
            )
        except repo.IdempotencyConflict as exc:
            raise HTTPException(409, str(exc)) from None
        session.flush()
        body = job_json(session, job, new=created)
    if created:
        try:
            state.enqueue(body["id"], priority)
        except Exception as exc:  # the broker is down: a submit happens whole or not at all
            with state.db.session() as session:
                withdrawn = deletion.withdraw_unclaimed_job(session, body["id"])
            log.warning("job %s could not be queued (%s: %s); %s", body["id"], type(exc).__name__, exc,
                        "withdrawn" if withdrawn else "a worker took it meanwhile")
            if withdrawn:
                raise HTTPException(503, "the job queue (broker) cannot be reached; nothing was stored: "
                                         "try again (an Idempotency-Key makes that safe)") from None
    return body, created


def _check_references(session, who: Principal, params: BaseModel) -> None:
    """Documents and jobs named in params must exist and belong to the caller."""
    from db.models import Document

    document_id = getattr(params, "document_id", None)
    if document_id:
        doc = session.get(Document, document_id)
        if doc is None or not who.can_see(doc.owner):
            raise HTTPException(404, f"document {document_id} not found")
    job_id = getattr(params, "job_id", None)
    if job_id:
        job = session.get(Job, job_id)
        if job is None or not who.can_see(job.owner):
            raise HTTPException(404, f"job {job_id} not found")


@router.post("/jobs", status_code=202, response_model=JobOut)
def create(
    body: JobRequest,
    state: AppState = Depends(get_state),
    who: Principal = Depends(principal),
    idempotency_key: str | None = Header(default=None, alias="Idempotency-Key"),
):
    data, created = submit_job(state, who, body.kind, body.params, body.priority, idempotency_key,
                               prompt_set=body.prompt_set, max_calls=body.max_calls,
                               max_tokens_total=body.max_tokens_total)
    return JSONResponse(data, status_code=202 if created else 200, headers={"Location": f"/v1/jobs/{data['id']}"})


@router.get("/jobs", response_model=JobList)
def list_jobs(
    status: str | None = Query(default=None, description="comma-separated statuses"),
    kind: str | None = None,
    parent_id: str | None = None,
    limit: int = Query(default=50, ge=1, le=500),
    offset: int = Query(default=0, ge=0, le=2**31 - 1),  # past any real listing; larger overflows the database
    state: AppState = Depends(get_state),
    who: Principal = Depends(principal),
):
    if status and any(s not in JOB_STATUSES for s in status.split(",")):
        raise HTTPException(422, f"status must be among {', '.join(JOB_STATUSES)}")
    with state.db.reading() as session:
        jobs, total = repo.list_jobs(
            session, owner=None if who.is_admin else who.owner, status=status, kind=kind,
            parent_id=parent_id, limit=limit, offset=offset,
        )
        usage = repo.usage_by_job(session, [j.id for j in jobs])
        items = [job_json(session, j, full=False, usage=usage[j.id]) for j in jobs]
        return JSONResponse({"items": items, "total": total, "limit": limit, "offset": offset})


def load_visible_job(session, job_id: str, who: Principal) -> Job:
    job = repo.get_job(session, job_id)
    if job is None or not who.can_see(job.owner):  # a foreign job looks like a missing one
        raise HTTPException(404, f"job {job_id} not found")
    return job


@router.get("/jobs/{job_id}", response_model=JobOut)
def get_job(job_id: str, state: AppState = Depends(get_state), who: Principal = Depends(principal)):
    with state.db.reading() as session:
        return JSONResponse(job_json(session, load_visible_job(session, job_id, who)))


@router.post("/jobs/{job_id}/cancel", response_model=JobOut)
def cancel(job_id: str, state: AppState = Depends(get_state), who: Principal = Depends(principal)):
    with state.db.session() as session:
        job = load_visible_job(session, job_id, who)
        if job.status in FINISHED_STATUSES:
            raise HTTPException(409, f"job {job_id} already {job.status}")
        repo.request_cancel(session, job)
        for child in repo.list_jobs(session, parent_id=job_id, status="queued,running", limit=100_000)[0]:
            repo.request_cancel(session, child)
        session.flush()
        return JSONResponse(job_json(session, job))


@router.delete("/jobs/{job_id}", status_code=204,
               responses={409: {"description": "the job or one of its children is queued or running: cancel it first"}})
def delete_job(job_id: str, state: AppState = Depends(get_state), who: Principal = Depends(principal)):
    """Delete a finished job with its steps, events, scores, children and files (204)."""
    delete_visible_job(state, job_id, who)
    return Response(status_code=204)


def delete_visible_job(state: AppState, job_id: str, who: Principal, kind: str | None = None) -> None:
    """Delete the job (404 when the caller cannot see it, or it is not of `kind`; 409 while it or a
    child is queued or running), then its files under the data directory."""
    with state.db.session() as session:
        job = load_visible_job(session, job_id, who)
        if kind is not None and job.kind != kind:
            raise HTTPException(404, f"{kind} {job_id} not found (job {job_id} is a {job.kind} job)")
        try:
            ids = deletion.delete_job_tree(session, job_id)
        except deletion.StillActive as exc:
            raise HTTPException(409, str(exc)) from None
    deletion.remove_job_files(state.settings.longform_data_dir, ids)


@router.post("/purge")
def purge(
    # le: a cutoff further back than year 1 overflows datetime (a 500); a century keeps everything anyway
    older_than_days: float | None = Query(default=None, gt=0, le=36500, description="default: RETENTION_DAYS"),
    state: AppState = Depends(get_state),
    who: Principal = Depends(principal),
):
    """Admin: delete finished top-level jobs (with their children and files) whose finished_at is
    older than the given number of days. Returns the ids purged."""
    if not who.is_admin:
        raise HTTPException(403, "purging needs an admin key")
    days = older_than_days if older_than_days is not None else state.settings.retention_days
    if not days or days <= 0:
        raise HTTPException(422, "give older_than_days (RETENTION_DAYS is 0: keep forever)")
    purged = deletion.purge(state.db, state.settings.longform_data_dir, days)
    return {"purged": purged, "count": len(purged), "older_than_days": days}


class RetryRequest(BaseModel):
    mode: Literal["reuse", "fresh"] | None = Field(
        default=None,
        description="what to do with stored steps that no longer match the code: reuse them, or run them "
                    "and the steps that depend on them afresh; without a mode such a retry is refused (409)",
    )
    max_calls: int | None = Field(
        default=None, ge=0, le=MAX_CAP, strict=True,
        description="a new cap on the job's model calls, counting those it already made (0: unlimited; "
                    "omitted: keep the cap); a job stopped by its budget goes on with a higher one",
    )
    max_tokens_total: int | None = Field(
        default=None, ge=0, le=MAX_CAP, strict=True,
        description="a new cap on the job's prompt + completion tokens, counting those it already used "
                    "(0: unlimited; omitted: keep the cap)",
    )


@router.post("/jobs/{job_id}/retry", status_code=202, response_model=JobOut,
             responses={409: {"description": "not retryable, or stored steps no longer match the code (without a mode)"}})
def retry(job_id: str, body: RetryRequest | None = None, state: AppState = Depends(get_state),
          who: Principal = Depends(principal)):
    mode = body.mode if body is not None else None
    with state.db.session() as session:
        job = load_visible_job(session, job_id, who)
        if job.status not in ("failed", "cancelled"):
            raise HTTPException(409, f"only failed or cancelled jobs can be retried; job {job_id} is {job.status}")
        if mode is None:
            stale = _stale_steps(session, job, state.settings)
            if stale:
                raise HTTPException(409, {
                    "message": f"{fingerprints.describe(stale)}: retry with mode 'reuse' to keep them or 'fresh' "
                               "to run them and the steps that depend on them again",
                    "stale_steps": stale,
                })
        for name in BUDGET_FIELDS:  # new caps, if given (0: unlimited)
            value = getattr(body, name) if body is not None else None
            if value is not None:
                setattr(job, name, value or None)
        repo.requeue_for_retry(session, job, mode)
        session.flush()
        body, priority = job_json(session, job), job.priority
    try:
        state.enqueue(job_id, priority)
    except Exception as exc:
        # Queued in the database all the same: the workers send queued jobs again once the
        # broker answers (workers/celery_app.py, the sweeper).
        log.warning("job %s could not be queued for its retry (%s: %s)", job_id, type(exc).__name__, exc)
        raise HTTPException(503, f"job {job_id} is queued again, but the job queue (broker) cannot be reached: "
                                 "workers send it once the broker is back") from None
    return JSONResponse(body, status_code=202)


def _stale_steps(session, job: Job, settings) -> list[dict[str, Any]]:
    """Stored steps whose templates (as the job's prompt overlay serves them now) or kind
    version changed (the worker also compares models)."""
    try:
        version = get_kind(job.kind).version
    except Exception:  # the kind is gone: the worker will fail the job with the reason
        return []
    try:
        overlay = settings.prompt_overlay(job.prompt_set)
    except prompts.UnknownPromptSet as exc:
        raise HTTPException(409, f"job {job.id} cannot run again: {exc}") from None
    steps = [fingerprints.StoredStep(*row) for row in repo.stored_steps(session, job.id)]
    return fingerprints.stale_steps(steps, version, overlay=overlay)


@router.get("/jobs/{job_id}/steps", response_model=StepList)
def steps(
    job_id: str,
    with_output: bool = False,
    state: AppState = Depends(get_state),
    who: Principal = Depends(principal),
):
    with state.db.reading() as session:
        load_visible_job(session, job_id, who)
        return JSONResponse({"items": [step_json(s, with_output) for s in repo.list_steps(session, job_id)]})


@router.get("/jobs/{job_id}/events", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}, "description": "the job's events (SSE)"}})
async def events(
    job_id: str,
    request: Request,
    state: AppState = Depends(get_state),
    who: Principal = Depends(principal),
    last_event_id: str | None = Header(default=None, alias="Last-Event-ID"),
):
    """Server-Sent Events: status, progress and log events until the job ends.

    Events are read from the database, so a client that reconnects with Last-Event-ID
    misses nothing, whichever API replica it reaches.
    """
    with state.db.reading() as session:
        load_visible_job(session, job_id, who)
    after = int(last_event_id) if last_event_id and last_event_id.isdigit() else 0
    return event_stream_response(state, job_id, after, request)


def event_stream_response(state: AppState, job_id: str, after: int, request: Request) -> StreamingResponse:
    """The SSE stream of a job the caller may see (checked by the caller), from event `after` on.
    Shared by this route and the admin UI's."""

    def fetch(after_id: int):
        with state.db.reading() as session:
            # The status first: each SELECT may see a newer snapshot (SQLite outside a write,
            # PostgreSQL's read committed), and a job's final status and its last event are
            # committed together, so events read after a finished status include that event.
            # Read the other way round, a job finishing between the two reads ended the stream
            # without its final event.
            status = session.get(Job, job_id).status
            rows = repo.events_after(session, job_id, after_id)
            return [(e.id, e.type, e.data) for e in rows], status

    async def stream():
        nonlocal after
        idle = 0.0
        while True:
            rows, status = await asyncio.to_thread(fetch, after)
            for event_id, type_, data in rows:
                after = event_id
                yield f"id: {event_id}\nevent: {type_}\ndata: {json.dumps(data)}\n\n"
            if not rows and status in FINISHED_STATUSES:
                return  # everything up to the final status was sent
            if await request.is_disconnected():
                return
            idle = 0.0 if rows else idle + 0.25
            if idle >= 15:  # keep proxies from closing a quiet stream
                yield ": keep-alive\n\n"
                idle = 0.0
            await asyncio.sleep(0.25)

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


@router.get("/kinds", response_model=KindList)
def kinds():
    """The job kinds: params and result JSON schemas, and how a result is shown."""
    return {"items": [kind.describe() for kind in all_kinds()]}


@router.get("/prompts")
def prompt_templates(
    prompt_set: str | None = Query(default=None, max_length=100,
                                   description="show the templates as this set serves them"),
    state: AppState = Depends(get_state),
    _who: Principal = Depends(principal),
):
    """The prompt sets a job may choose, and every template with where its text comes from
    ("bundled", "PROMPTS_DIR" or "set:NAME") for a job without a set (or with `prompt_set`).
    Overlay files that match no template are listed with note "unused". No server paths."""
    settings = state.settings
    check_prompt_set(state, prompt_set)
    overlay = settings.prompt_overlay(prompt_set)

    def public(problem: str) -> str:  # an error message names no directory of the server
        layers = (overlay.layers if overlay is not None else ()) + ((prompts.BUNDLED, str(prompts.TEMPLATE_DIR)),)
        for origin, directory in layers:
            problem = problem.replace(directory, origin)
        return problem

    return {
        "prompt_sets": prompts.prompt_sets(settings.prompt_sets_dir),
        "prompts_dir": bool(settings.prompts_dir),
        "prompt_set": prompt_set,
        "items": [
            {"name": e.name, "origin": e.origin, "bundled": e.bundled, "note": e.note or None,
             "problem": public(e.problem) or None}
            for e in prompts.listing(overlay)
        ],
    }
