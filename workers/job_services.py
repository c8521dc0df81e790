"""`JobServices` over the database: what a running job may ask of the service.

Documents, other jobs' results and child jobs, for the job context (agents never see the
database). The API's dataset export reads children the same way (`read_children`).
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable, Iterable

from agents.context import ChildJob
from agents.kinds import validate_params
from agents.settings import Settings
from db import repo
from db.models import Document, Job
from db.session import Database

log = logging.getLogger("longform.worker")


def child_job(job: Job) -> ChildJob:
    return ChildJob(id=job.id, status=job.status, params=job.params or {}, result=job.result,
                    created_at=job.created_at, finished_at=job.finished_at, error=job.error)


def read_children(session, parent_id: str, *, finished_only: bool = False, exclude: Iterable[str] = ()) -> list[ChildJob]:
    """Children of a job in creation order (finished ones only, if asked), but those in `exclude`."""
    if finished_only:
        jobs = repo.finished_children(session, parent_id, exclude=exclude)
    else:
        excluded = set(exclude)
        jobs = [j for j in repo.list_jobs(session, parent_id=parent_id, limit=1_000_000)[0] if j.id not in excluded]
    jobs.sort(key=lambda j: (j.created_at, j.id))
    return [child_job(j) for j in jobs]


class DbJobServices:
    def __init__(self, db: Database, settings: Settings, enqueue: Callable[[str, int], None],
                 run_queued_child: Callable[[str], Awaitable[bool]] | None = None):
        self.db = db
        self.settings = settings
        self.enqueue = enqueue  # how a new job becomes runnable (a Celery task, or a wake-up)
        self._run_queued_child = run_queued_child  # the worker's: claim a child and run it here

    async def _read(self, fn, *args, **kwargs):
        def call():
            with self.db.reading() as session:
                return fn(session, *args, **kwargs)

        return await asyncio.to_thread(call)

    async def load_document(self, document_id: str) -> str:
        def load(session) -> str:
            document = session.get(Document, document_id)
            if document is None:
                raise LookupError(f"document {document_id} not found")
            return document.text

        return await self._read(load)

    async def load_job_result(self, job_id: str) -> dict[str, Any]:
        def load(session) -> dict[str, Any]:
            job = repo.get_job(session, job_id)
            if job is None:
                raise LookupError(f"job {job_id} not found")
            if job.status != "succeeded":
                raise LookupError(f"job {job_id} has not succeeded (status {job.status})")
            return job.result or {}

        return await self._read(load)

    async def spawn_children(self, parent_id: str, kind: str, params_list: list[dict[str, Any]], priority: int,
                             start: int = 0) -> list[str]:
        def create() -> list[str]:
            with self.db.session() as session:
                parent = repo.get_job(session, parent_id)
                ids = []
                for index, params in enumerate(params_list, start):
                    model = validate_params(kind, params, self.settings)
                    job, _ = repo.create_job(
                        session, kind, model.model_dump(mode="json"), owner=parent.owner, priority=priority,
                        idempotency_key=f"{parent_id}/child/{index}", parent_id=parent_id,
                        prompt_set=parent.prompt_set,  # children render from the parent's prompt set
                        # and each gets the parent's budget caps as its own (per job, not shared)
                        max_calls=parent.max_calls, max_tokens_total=parent.max_tokens_total,
                    )
                    ids.append(job.id)
                return ids

        ids = await asyncio.to_thread(create)
        for job_id in ids:
            try:
                self.enqueue(job_id, priority)
            except Exception as exc:  # the broker is down: the child is stored as queued, and the
                # workers send queued jobs again once it answers; the parent need not fail
                log.warning("child job %s stays queued until the broker answers: %s", job_id, exc)
        return ids

    async def children_status(self, parent_id: str) -> dict[str, int]:
        return await self._read(repo.children_status, parent_id)

    async def run_queued_child(self, parent_id: str) -> bool:
        return await self._run_queued_child(parent_id) if self._run_queued_child else False

    async def children(self, parent_id: str, *, finished_only: bool = False, exclude: Iterable[str] = ()) -> list[ChildJob]:
        return await self._read(read_children, parent_id, finished_only=finished_only, exclude=set(exclude))
