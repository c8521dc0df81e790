"""Retention: purge old finished jobs (RETENTION_DAYS) from the workers' periodic loops.

The embedded worker's poll loop and each Celery worker's sweeper thread call `maybe_purge`;
it runs a purge at most every PURGE_INTERVAL_S per process. Several workers purging at once
is harmless: each job is deleted in its own transaction, and one already gone is skipped.
"""
from __future__ import annotations

import logging
import threading
import time

from agents.settings import Settings
from db import deletion

log = logging.getLogger("longform.retention")

PURGE_INTERVAL_S = 600.0


class RetentionTimer:
    def __init__(self, interval_s: float = PURGE_INTERVAL_S):
        self.interval_s = interval_s
        self._next = 0.0  # the first check purges at once
        self._lock = threading.Lock()

    def due(self, settings: Settings) -> bool:
        """True (and the next run scheduled) when a purge should run now."""
        if settings.retention_days <= 0:
            return False
        with self._lock:
            now = time.monotonic()
            if now < self._next:
                return False
            self._next = now + self.interval_s
            return True

    def maybe_purge(self, db, settings: Settings) -> list[str]:
        if not self.due(settings):
            return []
        try:
            return deletion.purge(db, settings.longform_data_dir, settings.retention_days)
        except Exception:  # a database hiccup: the next interval tries again
            log.exception("retention purge failed")
            return []
