"""Deleting jobs (with their steps, events, scores and children), documents, and retention.

A job is deleted only when it and every job below it is finished: a queued job may be
claimed by a worker at any moment, so queued counts as active too (cancel first). The
rows go in one transaction; the files a job wrote under the data directory
(DATA_DIR/datasets/{job_id}) are removed by the caller after the commit.
"""
from __future__ import annotations

import logging
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterable

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from agents.status import FINISHED_STATUSES
from db.models import Document, Job, JobEvent, Score, Step

log = logging.getLogger("longform.retention")

ACTIVE_STATUSES = ("queued", "running")


class StillActive(Exception):
    """The job (or one below it) is queued or running, or a document is in use by such a job."""


def job_tree_levels(session: Session, job_id: str, *, lock: bool = False) -> list[list[str]]:
    """The job, then its children, then theirs...: one list per level, the job's first."""
    levels, frontier = [[job_id]], [job_id]
    while frontier:
        found: list[str] = []
        for start in range(0, len(frontier), 500):
            stmt = select(Job.id).where(Job.parent_id.in_(frontier[start:start + 500]))
            found.extend(session.scalars(stmt.with_for_update() if lock else stmt))
        if found:
            levels.append(found)
        frontier = found
    return levels


def _active_in(session: Session, ids: list[str]) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for start in range(0, len(ids), 500):
        rows = session.execute(
            select(Job.id, Job.status).where(Job.id.in_(ids[start:start + 500]), Job.status.in_(ACTIVE_STATUSES))
        )
        found.extend((row.id, row.status) for row in rows)
    return found


def _jobs_referencing(session: Session, field: str, ids: list[str]) -> list[str]:
    """Ids of queued or running jobs (outside `ids`) whose params name one of `ids` in `field`."""
    column = Job.params[field].as_string()
    found: list[str] = []
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        found.extend(session.scalars(
            select(Job.id).where(Job.status.in_(ACTIVE_STATUSES), column.in_(chunk), Job.id.not_in(ids))
        ))
    return found


def withdraw_unclaimed_job(session: Session, job_id: str) -> bool:
    """Delete a job no worker has taken up yet (queued, never run) with its events, in the
    caller's transaction: a submit whose job could not be queued takes it back. False when a
    worker took it meanwhile (it then runs: nothing to take back)."""
    unclaimed = session.execute(
        select(Job.id).where(Job.id == job_id, Job.status == "queued", Job.runs == 0).with_for_update()
    ).scalar()
    if unclaimed is None:
        return False
    session.execute(delete(JobEvent).where(JobEvent.job_id == job_id))
    session.execute(delete(Job).where(Job.id == job_id))
    return True


def delete_job_tree(session: Session, job_id: str) -> list[str]:
    """Delete the job, every job below it and their steps, events and scores, in the caller's
    transaction. Raises StillActive (nothing deleted) when any of them is queued or running,
    or a queued or running job elsewhere names one of them (`job_id` param). Returns the ids."""
    parent_id = session.execute(select(Job.parent_id).where(Job.id == job_id).with_for_update()).scalar()
    while parent_id is not None:  # a child of an unfinished build is still the build's to read
        parent = session.execute(select(Job.status, Job.parent_id).where(Job.id == parent_id)).one_or_none()
        if parent is None:
            break
        if parent.status in ACTIVE_STATUSES:
            raise StillActive(f"job {job_id} belongs to job {parent_id}, which is {parent.status}: "
                              "cancel that first, or wait for it to finish")
        parent_id = parent.parent_id
    levels = job_tree_levels(session, job_id, lock=True)
    ids = [i for level in levels for i in level]
    active = _active_in(session, ids)
    if active:
        which, status = active[0]
        whose = f"job {job_id} is {status}" if which == job_id else f"its child job {which} is {status}"
        raise StillActive(f"{whose}: cancel it first (`POST /v1/jobs/{job_id}/cancel`), then delete")
    users = _jobs_referencing(session, "job_id", ids)
    if users:
        raise StillActive(f"job {job_id} is used by the unfinished job {users[0]}: cancel that first")
    _delete_rows(session, levels)
    return ids


def _delete_rows(session: Session, levels: list[list[str]]) -> None:
    # Explicit deletes rather than relying on ON DELETE CASCADE alone (SQLite enforces it only
    # with PRAGMA foreign_keys=ON). The deepest level first, so no cascade removes a row a
    # later statement expects; the status guard catches a job re-queued (a retry) since the
    # check, on a database without row locks (the transaction then rolls back).
    for level in reversed(levels):
        for start in range(0, len(level), 500):
            chunk = level[start:start + 500]
            for model in (Step, JobEvent, Score):
                session.execute(delete(model).where(model.job_id.in_(chunk)),
                                execution_options={"synchronize_session": False})
            done = session.execute(
                delete(Job).where(Job.id.in_(chunk), Job.status.in_(FINISHED_STATUSES)),
                execution_options={"synchronize_session": False},
            )
            if done.rowcount != len(chunk):
                raise StillActive(f"job {levels[0][0]} changed while being deleted: try again")
    session.expire_all()


def delete_document(session: Session, document: Document) -> None:
    """Delete a document unless a queued or running job uses it (StillActive)."""
    users = _jobs_referencing(session, "document_id", [document.id])
    if users:
        raise StillActive(f"document {document.id} is used by the unfinished job {users[0]}: "
                          "cancel it first (or wait for it to finish)")
    session.delete(document)


def remove_job_files(data_dir: str | Path, job_ids: Iterable[str]) -> None:
    """Remove what the jobs wrote under the data directory (dataset exports). Best effort."""
    root = Path(data_dir) / "datasets"
    for job_id in job_ids:
        path = root / job_id
        if path.parent == root and path.is_dir():  # ids are hex; never leave DATA_DIR/datasets
            shutil.rmtree(path, ignore_errors=True)


def expired_jobs(session: Session, older_than_days: float, limit: int = 1000) -> list[str]:
    """Top-level finished jobs whose finished_at is older than the given number of days."""
    cutoff = datetime.now(timezone.utc) - timedelta(days=older_than_days)
    return list(session.scalars(
        select(Job.id)
        .where(Job.parent_id.is_(None), Job.status.in_(FINISHED_STATUSES), Job.finished_at < cutoff)
        .order_by(Job.finished_at)
        .limit(limit)
    ))


def purge(db, data_dir: str | Path, older_than_days: float, batch: int = 200) -> list[str]:
    """Delete the finished top-level jobs older than `older_than_days` (with everything below
    them and their files), one job per transaction. A job that is still busy below (a child
    re-queued by a retry) is skipped. Returns the ids of the top-level jobs purged."""
    purged: list[str] = []
    skipped: set[str] = set()
    while True:
        with db.reading() as session:
            candidates = [j for j in expired_jobs(session, older_than_days, limit=batch + len(skipped))
                          if j not in skipped]
        if not candidates:
            break
        for job_id in candidates:
            try:
                with db.session() as session:
                    ids = delete_job_tree(session, job_id)
            except StillActive as exc:
                log.info("retention: kept job %s: %s", job_id, exc)
                skipped.add(job_id)
                continue
            remove_job_files(data_dir, ids)
            purged.append(job_id)
            log.info("retention: purged job %s (%d jobs with its children)", job_id, len(ids))
    if purged:
        log.info("retention: purged %d finished jobs older than %g days", len(purged), older_than_days)
    return purged
