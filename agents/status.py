"""Job statuses: one enum for the database, the API, the workers and the CLI's client."""
from __future__ import annotations

from enum import Enum


class JobStatus(str, Enum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


JOB_STATUSES = tuple(s.value for s in JobStatus)
FINISHED_STATUSES = (JobStatus.succeeded.value, JobStatus.failed.value, JobStatus.cancelled.value)
