"""Database-backed step checkpoints and job events for the agents' JobContext."""
from __future__ import annotations

import asyncio
from typing import Any

from agents.context import StepUsage
from agents.redact import redact, redact_any
from db import repo
from db.session import Database
from workers.checkpoint_writer import writer_for


def _usage_columns(usage: StepUsage) -> dict[str, Any]:
    return {
        "calls": usage.calls,
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "cached_tokens": usage.cached_tokens,
        "latency_s": round(usage.latency_s, 6),
        "model": usage.model or None,
        "finish_reason": usage.finish_reason or None,
        "template": usage.template or None,
        "template_hash": usage.template_hash or None,
        "fingerprint": usage.fingerprint(),
    }


class DbStepStore:
    def __init__(self, db: Database, job_id: str):
        self.db = db
        self.job_id = job_id
        self._writer = writer_for(db)

    async def succeeded(self) -> dict[str, Any]:
        def load() -> dict[str, Any]:
            with self.db.reading() as session:
                return repo.succeeded_steps(session, self.job_id)

        return await asyncio.to_thread(load)

    async def started(self, key: str) -> None:
        await self._writer.write("start", lambda dialect: repo.step_started(dialect, self.job_id, key))

    async def finished(self, key: str, output: Any, usage: StepUsage) -> None:
        values = {"output": output, **_usage_columns(usage)}
        await self._writer.write("finish", lambda dialect: repo.step_ended(dialect, self.job_id, key, "succeeded", values))

    async def failed(self, key: str, error: str, usage: StepUsage) -> None:
        values = {"error": redact(error)[:4000], **_usage_columns(usage)}
        await self._writer.write("finish", lambda dialect: repo.step_ended(dialect, self.job_id, key, "failed", values))


class DbEventSink:
    """Writes events for the SSE stream; progress events also update the job's progress."""

    def __init__(self, db: Database, job_id: str):
        self.db = db
        self.job_id = job_id

    async def emit(self, type: str, data: dict[str, Any]) -> None:
        data = redact_any(data)  # events reach every SSE client of the job; log events may quote errors

        def write() -> None:
            with self.db.session() as session:
                repo.add_event(session, self.job_id, type, data)
                if type == "progress" and data.get("total"):
                    repo.set_progress(session, self.job_id, float(data["done"]) / float(data["total"]), data)

        await asyncio.to_thread(write)
