"""JSON shapes of jobs, steps and documents in the REST API."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from db import repo
from db.models import Document, Job, Step


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:  # SQLite gives naive datetimes; all stored times are UTC
        value = value.replace(tzinfo=timezone.utc)
    return value.isoformat()


def job_json(
    session, job: Job, *, full: bool = True, usage: dict[str, int] | None = None, new: bool = False
) -> dict[str, Any]:
    """A job as the API shows it. `new`: just created, so no steps or scores to look up."""
    data: dict[str, Any] = {
        "id": job.id,
        "kind": job.kind,
        "status": job.status,
        "progress": round(job.progress or 0.0, 4),
        "progress_detail": job.progress_detail,
        "error": job.error,
        "priority": job.priority,
        "prompt_set": job.prompt_set,
        "parent_id": job.parent_id,
        "owner": job.owner,
        "runs": job.runs,
        "created_at": iso(job.created_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
    }
    if new or job.runs == 0:  # no worker has taken it up yet, so it has no steps to count
        usage = dict(repo.NO_USAGE)
    data["usage"] = usage if usage is not None else repo.job_usage(session, job.id)
    data["budget"] = budget_json(job, data["usage"])
    if full:
        data["params"] = job.params
        data["result"] = job.result if job.status == "succeeded" else None
        # Scores are stored with a success (workers/runtime.py), so only a succeeded job has any.
        data["scores"] = {s.metric: s.value for s in repo.job_scores(session, job.id)} if job.status == "succeeded" else {}
    return data


def budget_json(job: Job, usage: dict[str, int]) -> dict[str, Any]:
    """The job's caps (None: unlimited) and its use so far, as its stored steps record it."""
    return {
        "max_calls": job.max_calls,
        "calls": usage["calls"],
        "max_tokens_total": job.max_tokens_total,
        "tokens": usage["prompt_tokens"] + usage["completion_tokens"],
    }


def step_json(step: Step, with_output: bool = False) -> dict[str, Any]:
    data = {
        "key": step.key,
        "status": step.status,
        "attempt": step.attempt,
        "template": step.template,
        "template_hash": step.template_hash,
        "fingerprint": (step.fingerprint or {}).get("hash"),
        "model": step.model,
        "calls": step.calls,
        "prompt_tokens": step.prompt_tokens,
        "completion_tokens": step.completion_tokens,
        "cached_tokens": step.cached_tokens,
        "latency_s": step.latency_s,
        "finish_reason": step.finish_reason,
        "error": step.error,
        "started_at": iso(step.started_at),
        "finished_at": iso(step.finished_at),
    }
    if with_output:
        data["output"] = step.output
    return data


def document_json(doc: Document) -> dict[str, Any]:
    return {
        "id": doc.id,
        "name": doc.name,
        "sha256": doc.sha256,
        "bytes": doc.bytes,
        "words": doc.words,
        "tokens": doc.tokens,
        "gutenberg_stripped": doc.gutenberg_stripped,
        "created_at": iso(doc.created_at),
    }
