"""Admin UI under load, against one SQLite database holding 10,000 jobs (with steps and
finished times spread over the last two hours, inserted straight into a fresh database):

1. Latency: the dashboard, the jobs list (first page, a filtered and searched page, a deep
   page) and a job detail page, each asked for N times in one API process (FastAPI's
   TestClient, in-process; no worker). Target: p95 < 200 ms each.
2. Live watchers: ONE API process (uvicorn in a subprocess on a loopback port, same
   database, API keys required, no worker, no model) serves W concurrent event streams of
   running jobs, opened with httpx (async): half on the admin UI's `/admin/jobs/{id}/events`
   with a session cookie (logged in with an admin key through `/admin/login`), half on
   `/v1/jobs/{id}/events` with that key as a Bearer token. Each watched job has a `status`
   event before the watchers connect; once all are connected the bench appends a `progress`
   event to every watched job each second for a few seconds, then finishes the jobs (the
   final `status` event), which ends each stream. A watcher is ok when it got 200, at least
   one event, the final status event and a clean end of stream, with no error, within
   --watch-timeout seconds. Target: W of W ok (W = 200).

Run: .venv/bin/python bench/admin_ui.py [--jobs 10000] [--requests 50] [--watchers 200]
     [--watch-seconds 5] [--watch-timeout 30]
Last line: {"p95_ms": {"dashboard": ..., "jobs_list": ..., "job_detail": ..., ...},
            "watchers_ok": n, "watchers": W, ...}
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from sqlalchemy import insert, select  # noqa: E402

from agents.settings import Settings  # noqa: E402
from api.admin.session import COOKIE, CSRF_FIELD  # noqa: E402
from api.app import create_app  # noqa: E402
from db import repo  # noqa: E402
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


SERVER = """
import sys, uvicorn
from agents.settings import Settings
from api.app import create_app
url, data_dir, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
settings = Settings(longform_data_dir=data_dir, database_url=url, llm_endpoints="http://127.0.0.1:9/v1",
                    require_api_keys="always")
uvicorn.run(create_app(settings, run_worker=False), host="127.0.0.1", port=port, log_level="warning")
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def running_jobs(db: Database, n: int) -> list[str]:
    """n jobs in status running (the fill's own, topped up with new ones), each with a status event."""
    with db.session() as session:
        ids = list(session.scalars(select(Job.id).where(Job.status == "running").limit(n)))
        now = datetime.now(timezone.utc)
        extra = [{"id": uuid.uuid4().hex, "kind": "write", "status": "running", "owner": "local", "priority": 5,
                  "params": {"instruction": "Watched job", "target_words": 1000}, "progress": 0.1,
                  "created_at": now, "started_at": now, "runs": 1, "cancel_requested": False}
                 for _ in range(n - len(ids))]
        if extra:
            session.execute(insert(Job), extra)
            ids += [row["id"] for row in extra]
        for job_id in ids:
            repo.add_event(session, job_id, "status", {"status": "running"})
    return ids


def login(base: str, key: str) -> str:
    """The admin UI's session cookie, got as a browser gets it: the login form, then POST with its CSRF token."""
    with httpx.Client(base_url=base, timeout=30) as client:
        page = client.get("/admin/login")
        token = re.search(rf'name="{CSRF_FIELD}" value="([^"]+)"', page.text).group(1)
        response = client.post("/admin/login", data={CSRF_FIELD: token, "api_key": key})
        assert response.status_code in (302, 303), response.status_code
        return client.cookies.get(COOKIE)


async def watch(client: httpx.AsyncClient, url: str, headers: dict, connected: asyncio.Event, counter: list,
                total: int, timeout: float) -> dict:
    """One watcher: reads the stream until the server ends it. Returns what it saw."""
    seen = {"ok": False, "status": None, "events": 0, "final": False, "first_event_ms": None, "error": None}
    t0 = time.perf_counter()

    async def run():
        async with client.stream("GET", url, headers=headers) as response:
            seen["status"] = response.status_code
            if response.status_code != 200:
                return
            event_type = None
            async for line in response.aiter_lines():
                if line.startswith("event: "):
                    event_type = line[7:]
                elif line.startswith("data: "):
                    seen["events"] += 1
                    if seen["events"] == 1:
                        seen["first_event_ms"] = (time.perf_counter() - t0) * 1000
                        counter[0] += 1
                        if counter[0] >= total:
                            connected.set()
                    if event_type == "status" and json.loads(line[6:]).get("status") == "succeeded":
                        seen["final"] = True
            seen["ok"] = seen["events"] >= 1 and seen["final"]  # the stream ended cleanly after the final event

    try:
        await asyncio.wait_for(run(), timeout)
    except Exception as exc:  # noqa: BLE001 - any failure makes the watcher not ok
        seen["error"] = f"{type(exc).__name__}: {exc}"
        seen["ok"] = False
    return seen


async def watchers_phase(url: str, base: str, key: str, cookie: str, job_ids: list[str],
                         watch_seconds: float, timeout: float) -> dict:
    db = Database(url)
    connected, counter = asyncio.Event(), [0]
    limits = httpx.Limits(max_connections=len(job_ids) + 10, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=httpx.Timeout(timeout)) as client:
        tasks = []
        for i, job_id in enumerate(job_ids):
            if i % 2 == 0:
                path, headers = f"/admin/jobs/{job_id}/events", {"Cookie": f"{COOKIE}={cookie}"}
            else:
                path, headers = f"/v1/jobs/{job_id}/events", {"Authorization": f"Bearer {key}"}
            tasks.append(asyncio.create_task(watch(client, path, headers, connected, counter, len(job_ids), timeout)))
        t0 = time.perf_counter()
        try:
            await asyncio.wait_for(connected.wait(), timeout / 2)
        except asyncio.TimeoutError:
            pass
        all_connected_s = time.perf_counter() - t0
        print(f"{counter[0]} of {len(job_ids)} watchers had their first event after {all_connected_s:.1f} s")

        def append(type_: str, step: int) -> None:
            with db.session() as session:
                for job_id in job_ids:
                    if type_ == "progress":
                        repo.add_event(session, job_id, "progress", {"progress": round(0.1 + 0.1 * step, 2)})
                    else:
                        repo.finish_job(session, job_id, None, "succeeded", result={"text": "done"})

        for step in range(int(watch_seconds)):
            await asyncio.to_thread(append, "progress", step)
            await asyncio.sleep(1)
        finished_at = time.perf_counter()
        await asyncio.to_thread(append, "final", 0)
        results = await asyncio.gather(*tasks)
        end_s = time.perf_counter() - finished_at
    errors = [r["error"] or f"status {r['status']}, {r['events']} events, final {r['final']}"
              for r in results if not r["ok"]]
    first = [r["first_event_ms"] for r in results if r["first_event_ms"] is not None]
    return {
        "watchers": len(job_ids),
        "watchers_ok": sum(r["ok"] for r in results),
        "events_received": sum(r["events"] for r in results),
        "first_event_ms_p95": round(p95(first), 1) if first else None,
        "all_ended_s": round(end_s, 2),
        "errors": errors[:5],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--watchers", type=int, default=200)
    parser.add_argument("--watch-seconds", type=float, default=5, help="progress events appended, one a second")
    parser.add_argument("--watch-timeout", type=float, default=30, help="a watcher not done by then is not ok")
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
        p95s: dict[str, float] = {}
        p50s: dict[str, float] = {}
        with TestClient(create_app(settings, run_worker=False)) as client:
            for name, path in pages.items():
                first = client.get(path)  # warm up
                assert first.status_code == 200 and "/admin/login" not in str(first.url), path
                samples = []
                for _ in range(args.requests):
                    t0 = time.perf_counter()
                    response = client.get(path)
                    samples.append((time.perf_counter() - t0) * 1000)
                    assert response.status_code == 200
                p50s[name], p95s[name] = round(statistics.median(samples), 1), round(p95(samples), 1)
                verdict = "ok" if p95s[name] < 200 else "OVER 200 ms"
                print(f"{name:22s} p50 {p50s[name]:7.1f} ms   p95 {p95s[name]:7.1f} ms   {verdict}")

        # ---- live watchers: one uvicorn process, keys required ----
        db = Database(url)
        with db.session() as session:
            key, _row = repo.create_api_key(session, "bench-admin", is_admin=True)
        watched = running_jobs(db, args.watchers)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        root = Path(__file__).resolve().parent.parent
        env = {**os.environ, "PYTHONPATH": str(root)}
        server = subprocess.Popen([sys.executable, "-c", SERVER, url, tmp, str(port)], cwd=root, env=env)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the API process did not start")
                time.sleep(0.2)
            cookie = login(base, key)
            t0 = time.perf_counter()
            live = asyncio.run(watchers_phase(url, base, key, cookie, watched, args.watch_seconds, args.watch_timeout))
            print(f"watchers: {live['watchers_ok']} of {live['watchers']} ok in {time.perf_counter() - t0:.1f} s "
                  f"(half /admin with a session cookie, half /v1 with a key); {live['events_received']} events "
                  f"received; first event p95 {live['first_event_ms_p95']} ms; all streams ended "
                  f"{live['all_ended_s']} s after the jobs finished")
            for error in live.pop("errors"):
                print(f"  not ok: {error}")
            alive = server.poll() is None
            print(f"API process {'still serving' if alive else f'EXITED with {server.returncode}'}")
        finally:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
    print(json.dumps({"p95_ms": p95s, "watchers_ok": live["watchers_ok"], "watchers": live["watchers"],
                      "p50_ms": p50s, "jobs": args.jobs, "events_received": live["events_received"],
                      "first_event_ms_p95": live["first_event_ms_p95"], "all_ended_s": live["all_ended_s"]}))


if __name__ == "__main__":
    main()
