"""Admin UI latency with many jobs: 10,000 jobs (with steps and finished times spread over the
last hour) inserted straight into a fresh SQLite database, then the dashboard, the jobs list
(first page, a filtered and searched page, a deep page) and a job detail page, each asked for
N times in one API process (FastAPI's TestClient, in-process; no worker). Target: p95 < 200 ms each.

Not measured here: 200 concurrent event-stream watchers (each SSE stream polls the database
every 0.25 s, as /v1/jobs/{id}/events does).

Run: .venv/bin/python bench/admin_ui.py [--jobs 10000] [--requests 50]
Last line: {"jobs": N, "dashboard_ms_p95": ..., "jobs_list_ms_p95": ..., ...}
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fastapi.testclient import TestClient  # noqa: E402
from sqlalchemy import insert  # noqa: E402

from agents.settings import Settings  # noqa: E402
from api.app import create_app  # noqa: E402
from db.models import Job, Step  # noqa: E402
from db.schema import upgrade  # noqa: E402
from db.session import Database  # noqa: E402

KINDS = ["write", "chat", "summarize", "lengthen", "solve"]
STATUSES = ["succeeded"] * 6 + ["failed", "cancelled", "queued", "running"]


def fill(url: str, jobs: int, steps_per_job: int = 3) -> str:
    rng = random.Random(7)
    now = datetime.now(timezone.utc)
    job_rows, step_rows = [], []
    for i in range(jobs):
        status = rng.choice(STATUSES)
        created = now - timedelta(seconds=rng.uniform(0, 7200))
        finished = created + timedelta(seconds=rng.uniform(1, 60)) if status in ("succeeded", "failed", "cancelled") else None
        job_id = uuid.uuid4().hex
        job_rows.append({
            "id": job_id, "kind": rng.choice(KINDS), "status": status, "owner": "local", "priority": 5,
            "params": {"instruction": f"Write about topic {i} and rivers", "target_words": 1000},
            "result": {"text": "word " * 800} if status == "succeeded" else None,
            "progress": 1.0 if status == "succeeded" else 0.3, "created_at": created, "finished_at": finished,
            "started_at": created if status != "queued" else None, "runs": 1, "cancel_requested": False,
        })
        for s in range(steps_per_job):
            step_rows.append({
                "job_id": job_id, "key": f"section/{s + 1}", "status": "succeeded", "attempt": 1, "calls": 1,
                "prompt_tokens": 300, "completion_tokens": 600, "cached_tokens": 50, "latency_s": 1.2,
                "output": {"text": "word " * 200}, "started_at": created, "finished_at": finished or created,
            })
    db = Database(url)
    with db.session() as session:
        for start in range(0, len(job_rows), 2000):
            session.execute(insert(Job), job_rows[start:start + 2000])
        for start in range(0, len(step_rows), 5000):
            session.execute(insert(Step), step_rows[start:start + 5000])
    return next(r["id"] for r in job_rows if r["status"] == "succeeded")


def p95(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=20)[-1] if len(samples) >= 2 else samples[0]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'longform.db'}"
        upgrade(url)
        started = time.perf_counter()
        job_id = fill(url, args.jobs)
        print(f"inserted {args.jobs} jobs in {time.perf_counter() - started:.1f} s")
        settings = Settings(longform_data_dir=tmp, database_url=url, llm_endpoints="http://127.0.0.1:9/v1")
        pages = {
            "dashboard": "/admin/fragments/dashboard",
            "dashboard_page": "/admin/",
            "jobs_list": "/admin/jobs",
            "jobs_list_filtered": "/admin/jobs?kind=write&status=succeeded&q=rivers&sort=finished&dir=asc",
            "jobs_list_page_100": "/admin/jobs?page=100",
            "job_detail": f"/admin/jobs/{job_id}",
        }
        figures: dict[str, float] = {"jobs": args.jobs}
        with TestClient(create_app(settings, run_worker=False)) as client:
            for name, path in pages.items():
                assert client.get(path).status_code == 200, path  # warm up
                samples = []
                for _ in range(args.requests):
                    t0 = time.perf_counter()
                    response = client.get(path)
                    samples.append((time.perf_counter() - t0) * 1000)
                    assert response.status_code == 200
                figures[f"{name}_ms_p50"] = round(statistics.median(samples), 1)
                figures[f"{name}_ms_p95"] = round(p95(samples), 1)
                verdict = "ok" if figures[f"{name}_ms_p95"] < 200 else "OVER 200 ms"
                print(f"{name:22s} p50 {figures[f'{name}_ms_p50']:7.1f} ms   p95 {figures[f'{name}_ms_p95']:7.1f} ms   {verdict}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
