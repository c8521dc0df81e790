"""What every request handler needs: settings, the database, and how to queue a job."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from fastapi import Request

from agents.settings import Settings
from db.session import Database


@dataclass
class AppState:
    settings: Settings
    db: Database
    auth_required: bool
    notify_worker: Callable[[], None] = field(default=lambda: None)
    # The embedded model process's state, when this process's worker runs one.
    model_status: Callable[[], dict[str, Any] | None] = field(default=lambda: None)

    def enqueue(self, job_id: str, priority: int) -> None:
        """Make a queued job runnable: a Celery task in production, a wake-up in embedded mode."""
        if self.settings.broker_url:
            from workers.celery_app import enqueue

            enqueue(job_id, priority)
        else:
            self.notify_worker()


def get_state(request: Request) -> AppState:
    return request.app.state.longform
