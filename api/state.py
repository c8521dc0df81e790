"""What every request handler needs: settings, the database, and how to queue a job."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from fastapi import Request

from agents.settings import Settings
from api.served_models import ServedModels
from db.session import Database


@dataclass
class AppState:
    settings: Settings
    db: Database
    auth_required: bool
    notify_worker: Callable[[], None] = field(default=lambda: None)
    # The embedded model process's state, when this process's worker runs one.
    model_status: Callable[[], dict[str, Any] | None] = field(default=lambda: None)
    served_models: ServedModels | None = None  # the model names a job's params may ask for

    _send_task: Callable[[str, int], None] | None = None

    def model_endpoints(self) -> list[str]:
        """The model servers jobs use: LLM_ENDPOINTS, else this process's embedded model."""
        configured = self.settings.endpoint_list
        if configured:
            return configured
        status = self.model_status() or {}
        return [status["endpoint"]] if status.get("endpoint") else []

    def enqueue(self, job_id: str, priority: int) -> None:
        """Make a queued job runnable: a Celery task to this app's broker in production, a
        wake-up in embedded mode."""
        if not self.settings.broker_url:
            self.notify_worker()
            return
        if self._send_task is None:
            from workers.celery_app import Enqueuer

            self._send_task = Enqueuer(self.settings)
        self._send_task(job_id, priority)


async def get_state(request: Request) -> AppState:
    # async, although it awaits nothing: FastAPI runs a sync dependency in the thread pool,
    # and that hop (a thread wake-up, slow on busy cores) cost more than the lookup itself.
    return request.app.state.longform
