"""Small repository functions over a Session. Callers own the transaction (Database.session())."""
from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import Any, Iterable

from sqlalchemy import bindparam, delete, func, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.models import FINISHED_STATUSES, ApiKey, Document, Job, JobEvent, Score, Step, utcnow


# The workers' hot paths update the jobs table with Core statements: no ORM bulk-update work.
JOBS = Job.__table__


class IdempotencyConflict(Exception):
    """The same Idempotency-Key was used before with a different request."""


# ---- jobs -------------------------------------------------------------------------------


def request_fingerprint(kind: str, params: dict[str, Any], prompt_set: str | None = None,
                        budget: dict[str, int | None] | None = None) -> str:
    request: list[Any] = [kind, params] if prompt_set is None else [kind, params, {"prompt_set": prompt_set}]
    budget = {k: v for k, v in (budget or {}).items() if v is not None}
    if budget:  # only a job with caps hashes them: the hashes of jobs without are as before
        request.append({"budget": budget})
    return hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()


def create_job(
    session: Session,
    kind: str,
    params: dict[str, Any],
    *,
    owner: str = "local",
    priority: int = 5,
    idempotency_key: str | None = None,
    parent_id: str | None = None,
    prompt_set: str | None = None,
    max_calls: int | None = None,
    max_tokens_total: int | None = None,
) -> tuple[Job, bool]:
    """Insert a queued job. With an idempotency key already used by this owner, return that job.
    `max_calls`, `max_tokens_total`: the job's budget (None: unlimited)."""
    fingerprint = request_fingerprint(kind, params, prompt_set,
                                      {"max_calls": max_calls, "max_tokens_total": max_tokens_total})
    if idempotency_key:
        existing = find_by_idempotency_key(session, owner, idempotency_key)
        if existing is not None:
            return _same_request(existing, fingerprint), False
    job = Job(
        kind=kind,
        params=params,
        owner=owner,
        priority=priority,
        idempotency_key=idempotency_key,
        request_hash=fingerprint,
        parent_id=parent_id,
        prompt_set=prompt_set,
        max_calls=max_calls,
        max_tokens_total=max_tokens_total,
    )
    session.add(job)
    if not idempotency_key:
        session.flush()
    else:
        try:
            with session.begin_nested():  # a savepoint only where a duplicate key can happen
                session.flush()
        except IntegrityError:  # a concurrent request with the same key won the race
            existing = find_by_idempotency_key(session, owner, idempotency_key)
            if existing is None:
                raise
            return _same_request(existing, fingerprint), False
    add_event(session, job.id, "status", {"status": "queued"})
    return job, True


def _same_request(job: Job, fingerprint: str) -> Job:
    if job.request_hash != fingerprint:
        raise IdempotencyConflict(
            f"Idempotency-Key was already used for job {job.id} with a different request"
        )
    return job


def find_by_idempotency_key(session: Session, owner: str, key: str) -> Job | None:
    return session.scalar(select(Job).where(Job.owner == owner, Job.idempotency_key == key))


def get_job(session: Session, job_id: str) -> Job | None:
    return session.get(Job, job_id)


def list_jobs(
    session: Session,
    *,
    owner: str | None = None,
    status: str | None = None,
    kind: str | None = None,
    parent_id: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[Job], int]:
    query = select(Job)
    if owner is not None:
        query = query.where(Job.owner == owner)
    if status:
        query = query.where(Job.status.in_(status.split(",")))
    if kind:
        query = query.where(Job.kind == kind)
    if parent_id:
        query = query.where(Job.parent_id == parent_id)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(Job.created_at.desc(), Job.id).limit(limit).offset(offset)).all()
    return list(rows), total


NO_USAGE = {"steps": 0, "calls": 0, "prompt_tokens": 0, "completion_tokens": 0, "cached_tokens": 0}


def usage_by_job(session: Session, job_ids: list[str]) -> dict[str, dict[str, int]]:
    """Steps, calls and tokens of each job (one grouped query)."""
    usage = {job_id: dict(NO_USAGE) for job_id in job_ids}
    if not job_ids:
        return usage
    rows = session.execute(
        select(
            Step.job_id,
            func.count(Step.id),
            func.coalesce(func.sum(Step.calls), 0),
            func.coalesce(func.sum(Step.prompt_tokens), 0),
            func.coalesce(func.sum(Step.completion_tokens), 0),
            func.coalesce(func.sum(Step.cached_tokens), 0),
        )
        .where(Step.job_id.in_(job_ids))
        .group_by(Step.job_id)
    )
    for job_id, steps, calls, prompt, completion, cached in rows:
        usage[job_id] = {"steps": steps, "calls": calls, "prompt_tokens": prompt,
                         "completion_tokens": completion, "cached_tokens": cached}
    return usage


def job_usage(session: Session, job_id: str) -> dict[str, int]:
    return usage_by_job(session, [job_id])[job_id]


def request_cancel(session: Session, job: Job) -> None:
    """Cooperative cancel: a queued job is cancelled at once, a running one at its next check."""
    job.cancel_requested = True
    if job.status == "queued":
        _set_finished(session, job, "cancelled", error="cancelled before it started")


def requeue_for_retry(session: Session, job: Job, mode: str | None = None) -> None:
    """Queue a failed or cancelled job again; `mode` tells the worker what to do with stored
    steps that no longer match the code ("reuse" or "fresh"; None: fail the job)."""
    job.retry_mode = mode
    job.status = "queued"
    job.cancel_requested = False
    job.error = None
    job.finished_at = None
    job.worker = None
    add_event(session, job.id, "status", {"status": "queued", "retry": True})


@dataclass
class ClaimedJob:
    id: str
    kind: str
    params: dict[str, Any]
    priority: int
    runs: int  # including this one
    succeeded: dict[str, Any]  # outputs of the steps earlier runs finished, by key
    retry_mode: str | None = None  # see requeue_for_retry
    prompt_set: str | None = None  # the job's named prompt set, if any
    max_calls: int | None = None  # the job's budget (None: unlimited)
    max_tokens_total: int | None = None


def claim_jobs(session: Session, job_ids: list[str], worker: str, lease_s: float) -> list[ClaimedJob]:
    """Take jobs to run: queued ones, or running ones whose worker stopped heartbeating.

    Atomic (one UPDATE for all of them), so a job offered twice runs once. Returns the jobs
    this worker got, with the steps their earlier runs finished; the rest are not ours.
    """
    if not job_ids:
        return []
    now = utcnow()
    stale = now - timedelta(seconds=lease_s)
    rows = session.execute(
        update(JOBS)
        .where(
            JOBS.c.id.in_(job_ids),
            JOBS.c.cancel_requested.is_(False),
            or_(JOBS.c.status == "queued", (JOBS.c.status == "running") & (JOBS.c.heartbeat_at < stale)),
        )
        .values(status="running", worker=worker, heartbeat_at=now, runs=JOBS.c.runs + 1, started_at=func.coalesce(JOBS.c.started_at, now))
        .returning(JOBS.c.id, JOBS.c.kind, JOBS.c.params, JOBS.c.priority, JOBS.c.runs, JOBS.c.retry_mode,
                   JOBS.c.prompt_set, JOBS.c.max_calls, JOBS.c.max_tokens_total)
    ).all()
    if not rows:
        return []
    session.execute(insert(JobEvent), [
        {"job_id": row.id, "type": "status", "data": {"status": "running", "run": row.runs}} for row in rows
    ])
    # A first run has no earlier steps to load.
    steps = succeeded_steps_by_job(session, [row.id for row in rows if row.runs > 1])
    return [ClaimedJob(row.id, row.kind, row.params, row.priority, row.runs, steps.get(row.id, {}), row.retry_mode,
                       row.prompt_set, row.max_calls, row.max_tokens_total)
            for row in rows]


def claim_job(session: Session, job_id: str, worker: str, lease_s: float) -> ClaimedJob | None:
    """claim_jobs for one job: the job, or None when it is not ours to run."""
    claimed = claim_jobs(session, [job_id], worker, lease_s)
    return claimed[0] if claimed else None


def heartbeat(session: Session, worker: str, job_ids: Iterable[str]) -> set[str]:
    """Renew the leases of the jobs this worker runs (one UPDATE for all of them).

    Returns the jobs it must stop: cancel requested, or the lease lost to another worker.
    """
    job_ids = list(job_ids)
    if not job_ids:
        return set()
    session.execute(
        update(JOBS)
        .where(JOBS.c.id.in_(job_ids), JOBS.c.worker == worker, JOBS.c.status == "running")
        .values(heartbeat_at=utcnow())
    )
    rows = session.execute(select(JOBS.c.id, JOBS.c.cancel_requested, JOBS.c.worker, JOBS.c.status).where(JOBS.c.id.in_(job_ids)))
    keep = {job_id for job_id, cancel, owner, status in rows if not cancel and owner == worker and status == "running"}
    return set(job_ids) - keep


def set_progress(session: Session, job_id: str, progress: float, detail: dict[str, Any]) -> None:
    session.execute(
        update(JOBS)
        .where(JOBS.c.id == job_id)
        .values(progress=max(0.0, min(1.0, progress)), progress_detail=detail)
    )


def finish_job(
    session: Session, job_id: str, worker: str | None, status: str, *, result: Any = None, error: str | None = None
) -> bool:
    """Record the outcome, only if this worker still holds the job (one UPDATE)."""
    conditions = [JOBS.c.id == job_id, JOBS.c.status == "running"]
    if worker is not None:
        conditions.append(JOBS.c.worker == worker)
    values: dict[str, Any] = {"status": status, "finished_at": utcnow(), "error": error}
    if result is not None:
        values["result"] = result
    if status == "succeeded":
        values["progress"] = 1.0
    done = session.execute(update(JOBS).where(*conditions).values(**values))
    if done.rowcount != 1:
        return False
    add_event(session, job_id, "status", _status_event(status, error))
    return True


def _set_finished(session: Session, job: Job, status: str, *, error: str | None = None) -> None:
    job.status = status
    job.finished_at = utcnow()
    job.error = error
    add_event(session, job.id, "status", _status_event(status, error))


def _status_event(status: str, error: str | None) -> dict[str, Any]:
    return {"status": status, "error": error} if error else {"status": status}


def release_job(session: Session, job_id: str, worker: str) -> None:
    """Hand an unfinished job back to the queue (time slice used up, worker shutting down)."""
    session.execute(
        update(JOBS)
        .where(JOBS.c.id == job_id, JOBS.c.worker == worker, JOBS.c.status == "running")
        .values(status="queued", worker=None, heartbeat_at=None)
    )


def runnable_job_ids(session: Session, lease_s: float, limit: int, exclude: Iterable[str] = ()) -> list[str]:
    return [job_id for job_id, _, _ in runnable_jobs(session, lease_s, limit, exclude)]


def runnable_jobs(
    session: Session, lease_s: float, limit: int, exclude: Iterable[str] = ()
) -> list[tuple[str, str, int]]:
    """(id, status, priority) of queued jobs by priority then age, plus running jobs whose lease ran out."""
    stale = utcnow() - timedelta(seconds=lease_s)
    query = (
        select(Job.id, Job.status, Job.priority)
        .where(
            Job.cancel_requested.is_(False),
            or_(Job.status == "queued", (Job.status == "running") & (Job.heartbeat_at < stale)),
        )
        .order_by(Job.priority, Job.created_at)
        .limit(limit)
    )
    excluded = set(exclude)
    if excluded:
        query = query.where(Job.id.not_in(excluded))
    return [tuple(row) for row in session.execute(query)]


def finished_children(session: Session, parent_id: str, exclude: Iterable[str] = ()) -> list[Job]:
    """Children of a job that have finished, but for those in `exclude`."""
    query = select(Job).where(Job.parent_id == parent_id, Job.status.in_(FINISHED_STATUSES))
    excluded = set(exclude)
    if excluded:
        query = query.where(Job.id.not_in(excluded))
    return list(session.scalars(query))


def queued_child_ids(session: Session, parent_id: str, limit: int = 1) -> list[str]:
    """Queued children of a job that may be claimed (not cancelled), oldest first."""
    return list(session.scalars(
        select(Job.id).where(Job.parent_id == parent_id, Job.status == "queued", Job.cancel_requested.is_(False))
        .order_by(Job.created_at, Job.id).limit(limit)
    ))


def children_status(session: Session, parent_id: str) -> dict[str, int]:
    rows = session.execute(
        select(Job.status, func.count()).where(Job.parent_id == parent_id).group_by(Job.status)
    ).all()
    return {status: count for status, count in rows}


# ---- steps ------------------------------------------------------------------------------


def succeeded_steps(session: Session, job_id: str) -> dict[str, Any]:
    return succeeded_steps_by_job(session, [job_id])[job_id]


def succeeded_steps_by_job(session: Session, job_ids: list[str]) -> dict[str, dict[str, Any]]:
    """The outputs of each job's succeeded steps, by key, by job (in one query)."""
    steps: dict[str, dict[str, Any]] = {job_id: {} for job_id in job_ids}
    if job_ids:
        rows = session.execute(
            select(Step.job_id, Step.key, Step.output).where(Step.job_id.in_(job_ids), Step.status == "succeeded")
        )
        for job_id, key, output in rows:
            steps[job_id][key] = output
    return steps


def stored_steps(session: Session, job_id: str) -> list[tuple[str, dict[str, Any] | None, datetime | None, datetime | None]]:
    """(key, fingerprint, started_at, finished_at) of a job's succeeded steps."""
    return [tuple(row) for row in session.execute(
        select(Step.key, Step.fingerprint, Step.started_at, Step.finished_at)
        .where(Step.job_id == job_id, Step.status == "succeeded")
    )]


def drop_steps(session: Session, job_id: str, keys: Iterable[str]) -> None:
    """Forget steps, so the job's next run does them again."""
    keys = list(keys)
    if keys:
        session.execute(delete(Step).where(Step.job_id == job_id, Step.key.in_(keys)))


def restamp_steps(session: Session, job_id: str, fingerprints: dict[str, dict[str, Any] | None]) -> None:
    """Record new fingerprints for kept steps (a retry that reuses stale steps)."""
    for key, fingerprint in fingerprints.items():
        session.execute(update(Step).where(Step.job_id == job_id, Step.key == key).values(fingerprint=fingerprint))


def clear_retry_mode(session: Session, job_id: str) -> None:
    session.execute(update(JOBS).where(JOBS.c.id == job_id).values(retry_mode=None))


def list_steps(session: Session, job_id: str) -> list[Step]:
    return list(session.scalars(select(Step).where(Step.job_id == job_id).order_by(Step.id)))


# A checkpoint is one INSERT .. ON CONFLICT (job_id, key) DO UPDATE statement: atomic on both
# databases without a transaction of its own (one round trip). The statements are built once
# per dialect with bound parameters, so SQLAlchemy compiles each of them only once.
_STEP_OUTCOME_COLUMNS = (
    "output", "error", "calls", "prompt_tokens", "completion_tokens", "cached_tokens", "latency_s",
    "model", "finish_reason", "template", "template_hash", "fingerprint",
)

_STEP_OUTCOME_DEFAULTS = {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0, "cached_tokens": 0, "latency_s": 0.0}


@lru_cache(maxsize=None)
def _step_statements(dialect: str):
    insert = {"postgresql": postgresql_insert, "sqlite": sqlite_insert}[dialect]
    conflict = [Step.job_id, Step.key]
    common = {"job_id": bindparam("job_id"), "key": bindparam("key"), "status": bindparam("status")}
    now = bindparam("now")
    started = insert(Step).values(**common, attempt=1, started_at=now).on_conflict_do_update(
        index_elements=conflict,
        set_={"status": bindparam("status"), "attempt": Step.attempt + 1, "error": None, "started_at": now, "finished_at": None},
    )
    outcome = {name: bindparam(name, type_=Step.__table__.c[name].type) for name in _STEP_OUTCOME_COLUMNS}
    ended = insert(Step).values(**common, started_at=now, finished_at=now, **outcome).on_conflict_do_update(
        index_elements=conflict, set_={"status": bindparam("status"), "finished_at": now, **outcome},
    )
    return started, ended


def step_started(dialect: str, job_id: str, key: str):
    """Statement and parameters marking a step running: a new row, or the next attempt of one
    that failed or was cut off."""
    return _step_statements(dialect)[0], {"job_id": job_id, "key": key, "status": "running", "now": utcnow()}


def step_ended(dialect: str, job_id: str, key: str, status: str, values: dict[str, Any]):
    """Statement and parameters storing a step's outcome (inserting the row if its "running"
    row was never written)."""
    unknown = set(values) - set(_STEP_OUTCOME_COLUMNS)
    if unknown:
        raise ValueError(f"not step outcome columns: {sorted(unknown)}")
    params = {name: values.get(name, _STEP_OUTCOME_DEFAULTS.get(name)) for name in _STEP_OUTCOME_COLUMNS}
    return _step_statements(dialect)[1], {**params, "job_id": job_id, "key": key, "status": status, "now": utcnow()}


# ---- events -----------------------------------------------------------------------------


def add_event(session: Session, job_id: str, type: str, data: dict[str, Any]) -> None:
    # A Core insert, not session.add: no unit-of-work flush on the workers' hot path.
    session.execute(insert(JobEvent).values(job_id=job_id, type=type, data=data))


def events_after(session: Session, job_id: str, after_id: int, limit: int = 500) -> list[JobEvent]:
    return list(
        session.scalars(
            select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.id > after_id).order_by(JobEvent.id).limit(limit)
        )
    )


# ---- documents ---------------------------------------------------------------------------


def find_document(session: Session, owner: str, sha256: str, stripped: bool) -> Document | None:
    return session.scalar(
        select(Document).where(Document.owner == owner, Document.sha256 == sha256, Document.gutenberg_stripped == stripped)
    )


def list_documents(session: Session, owner: str | None, limit: int, offset: int) -> list[Document]:
    query = select(Document).order_by(Document.created_at.desc()).limit(limit).offset(offset)
    if owner is not None:
        query = query.where(Document.owner == owner)
    return list(session.scalars(query))


# ---- scores -----------------------------------------------------------------------------


def put_score(session: Session, job_id: str, metric: str, value: float | None, detail: dict | None = None) -> None:
    score = session.scalar(select(Score).where(Score.job_id == job_id, Score.metric == metric))
    if score is None:
        session.add(Score(job_id=job_id, metric=metric, value=value, detail=detail))
    else:
        score.value, score.detail = value, detail


def job_scores(session: Session, job_id: str) -> list[Score]:
    return list(session.scalars(select(Score).where(Score.job_id == job_id).order_by(Score.metric)))


# ---- API keys ---------------------------------------------------------------------------


def hash_key(plain: str) -> str:
    return hashlib.sha256(plain.encode()).hexdigest()


def create_api_key(session: Session, name: str, is_admin: bool = False) -> tuple[str, ApiKey]:
    """Returns the plain key (shown once) and its row; only the hash is stored."""
    plain = "lf_" + secrets.token_urlsafe(32)
    row = ApiKey(name=name, prefix=plain[:10], key_hash=hash_key(plain), is_admin=is_admin)
    session.add(row)
    session.flush()
    return plain, row


def verify_api_key(session: Session, plain: str) -> ApiKey | None:
    row = find_api_key(session, plain)
    if row is not None and key_use_is_stale(row):
        row.last_used_at = utcnow()  # at most one write a minute per key
    return row


def find_api_key(session: Session, plain: str) -> ApiKey | None:
    """The active key with this plain text; only reads (verify_api_key also records the use)."""
    return session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(plain), ApiKey.revoked_at.is_(None)))


def key_use_is_stale(row: ApiKey) -> bool:
    """Whether the key's last_used_at is due for an update (kept to the minute, not per request)."""
    return row.last_used_at is None or _aware(row.last_used_at) < utcnow() - timedelta(minutes=1)


def record_key_use(session: Session, key_id: str) -> None:
    session.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=utcnow()))


def _aware(value):
    """SQLite returns naive datetimes; every stored time is UTC."""
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def list_api_keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.created_at)))


def revoke_api_key(session: Session, key_id_or_prefix: str) -> ApiKey | None:
    row = session.scalar(
        select(ApiKey).where(or_(ApiKey.id == key_id_or_prefix, ApiKey.prefix == key_id_or_prefix))
    )
    if row is not None and row.revoked_at is None:
        row.revoked_at = utcnow()
    return row


def count_jobs_by_status(session: Session) -> dict[str, int]:
    return {s: n for s, n in session.execute(select(Job.status, func.count()).group_by(Job.status))}


def count_steps_by_status(session: Session) -> dict[str, int]:
    return {s: n for s, n in session.execute(select(Step.status, func.count()).group_by(Step.status))}


def token_totals(session: Session) -> dict[str, int]:
    row = session.execute(
        select(func.coalesce(func.sum(Step.prompt_tokens), 0), func.coalesce(func.sum(Step.completion_tokens), 0))
    ).one()
    return {"prompt": int(row[0]), "completion": int(row[1])}



# ---- admin UI: job search and dashboard figures -------------------------------------------

JOB_SORTS = {"created": Job.created_at, "finished": Job.finished_at, "kind": Job.kind, "status": Job.status,
             "priority": Job.priority, "owner": Job.owner}


def search_jobs(
    session: Session,
    *,
    owner: str | None = None,
    kinds: list[str] | None = None,
    statuses: list[str] | None = None,
    created_from: datetime | None = None,
    created_to: datetime | None = None,
    text: str | None = None,
    sort: str = "created",
    descending: bool = True,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[Job], int]:
    """Jobs by owner, kinds, statuses and creation time, whose instruction (params.instruction
    or params.question) or document name (params.document_id's) contains `text`; sorted by
    one of JOB_SORTS (then id); with the total count."""
    query = select(Job)
    if owner is not None:
        query = query.where(Job.owner == owner)
    if kinds:
        query = query.where(Job.kind.in_(kinds))
    if statuses:
        query = query.where(Job.status.in_(statuses))
    if created_from is not None:
        query = query.where(Job.created_at >= created_from)
    if created_to is not None:
        query = query.where(Job.created_at < created_to)
    if text:
        pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        named = select(Document.id).where(Document.id == Job.params["document_id"].as_string(),
                                          Document.name.ilike(pattern, escape="\\"))
        query = query.where(or_(
            Job.params["instruction"].as_string().ilike(pattern, escape="\\"),
            Job.params["question"].as_string().ilike(pattern, escape="\\"),
            named.exists(),
        ))
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    column = JOB_SORTS.get(sort, Job.created_at)
    order = column.desc() if descending else column.asc()
    rows = session.scalars(query.order_by(order, Job.id).limit(limit).offset(offset)).all()
    return list(rows), total


def job_counts(session: Session, owner: str | None = None) -> dict[str, int]:
    """Jobs by status (of one owner, or of everyone)."""
    query = select(Job.status, func.count()).group_by(Job.status)
    if owner is not None:
        query = query.where(Job.owner == owner)
    return {s: n for s, n in session.execute(query)}


def _minute(session: Session, column):
    """`column` truncated to the minute, as text (SQLite) or a timestamp (PostgreSQL)."""
    if session.get_bind().dialect.name == "postgresql":
        return func.date_trunc("minute", column)
    return func.strftime("%Y-%m-%d %H:%M", column)


def _as_minute(value) -> datetime:
    if isinstance(value, str):
        value = datetime.strptime(value, "%Y-%m-%d %H:%M")
    return _aware(value)


def finished_per_minute(session: Session, since: datetime, owner: str | None = None) -> list[tuple[datetime, str, int]]:
    """(minute, status, jobs) of the jobs that finished since `since`, counted in the database."""
    minute = _minute(session, Job.finished_at)
    query = select(minute, Job.status, func.count()).where(Job.finished_at >= since).group_by(minute, Job.status)
    if owner is not None:
        query = query.where(Job.owner == owner)
    return [(_as_minute(m), status, n) for m, status, n in session.execute(query)]


def tokens_per_minute(session: Session, since: datetime, owner: str | None = None) -> list[tuple[datetime, int]]:
    """(minute, completion tokens) of the steps that finished since `since`, summed in the database."""
    minute = _minute(session, Step.finished_at)
    query = (select(minute, func.coalesce(func.sum(Step.completion_tokens), 0))
             .where(Step.finished_at >= since).group_by(minute))
    if owner is not None:
        query = query.join(Job, Job.id == Step.job_id).where(Job.owner == owner)
    return [(_as_minute(m), int(n)) for m, n in session.execute(query)]


def running_jobs(session: Session, owner: str | None = None, limit: int = 20) -> list[Job]:
    query = select(Job).where(Job.status == "running").order_by(Job.started_at.desc(), Job.id).limit(limit)
    if owner is not None:
        query = query.where(Job.owner == owner)
    return list(session.scalars(query))


def active_workers(session: Session, since: datetime) -> dict[str, int]:
    """Workers that heartbeated a running job since `since`, with how many jobs each runs."""
    rows = session.execute(
        select(Job.worker, func.count()).where(Job.status == "running", Job.worker.is_not(None),
                                               Job.heartbeat_at >= since).group_by(Job.worker)
    )
    return {worker: n for worker, n in rows}


def get_api_key(session: Session, key_id: str) -> ApiKey | None:
    """A key that is not revoked, by id (the admin UI's session names its key by id)."""
    return session.scalar(select(ApiKey).where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None)))


def step_by_key(session: Session, job_id: str, key: str) -> Step | None:
    return session.scalar(select(Step).where(Step.job_id == job_id, Step.key == key))


def steps_with_prefix(session: Session, job_id: str, prefix: str) -> list[Step]:
    return list(session.scalars(select(Step).where(Step.job_id == job_id, Step.key.startswith(prefix, autoescape=True),
                                                   Step.status == "succeeded").order_by(Step.id)))
