"""Operations: liveness, readiness (database, broker, model endpoints; the code sandbox is reported
beside them, not required), Prometheus metrics."""
from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from sqlalchemy import text

from agents.llm.openai_pool import TRANSPORT_ERRORS
from agents.redact import redact, redact_any
from api.state import AppState, get_state
from db import repo
from db.schema import current_revision, head_revision

router = APIRouter(tags=["operations"])


@router.get("/healthz")
def healthz():
    return {"status": "ok"}


def _check_database(state: AppState) -> dict:
    with state.db.reading() as session:
        session.execute(text("SELECT 1"))
    current, head = current_revision(state.settings.database_url), head_revision(state.settings.database_url)
    if current != head:
        return {"ok": False, "error": f"schema at {current}, code needs {head}: run `longform db upgrade`"}
    return {"ok": True}


def _check_broker(state: AppState) -> dict:
    if not state.settings.broker_url:
        return {"ok": True, "mode": "embedded worker"}
    import redis

    client = redis.Redis.from_url(state.settings.broker_url, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
    finally:
        client.close()
    return {"ok": True, "mode": "celery"}


async def _check_models(state: AppState) -> dict:
    endpoints = state.settings.endpoint_list
    process = state.model_status()
    if process is not None:  # this process's worker runs the embedded model in a child
        return process
    if not endpoints:  # no worker here: the file is all there is to check
        from agents.llm.embedded import find_default_model_path

        path = state.settings.embedded_model_path or find_default_model_path()
        return {"ok": Path(path).is_file(), "mode": "embedded", "model_path": str(path)}

    async def probe(client: httpx.AsyncClient, base: str) -> dict:
        root = base[:-3] if base.endswith("/v1") else base
        try:
            response = await client.get(f"{root}/health")
            return {"endpoint": base, "up": response.status_code == 200}
        except TRANSPORT_ERRORS as exc:
            return {"endpoint": base, "up": False, "error": type(exc).__name__}

    async with httpx.AsyncClient(timeout=2.0) as client:
        results = await asyncio.gather(*(probe(client, e) for e in endpoints))
    return {"ok": any(r["up"] for r in results), "endpoints": list(results)}


async def _check_sandbox(state: AppState) -> dict:
    """Whether model-written code can run on this machine, and how isolated (a trivial run
    proves it; the result is kept 30 s). SANDBOX=unsafe says so here."""
    try:
        from sandbox import check_available

        return (await check_available(state.settings.sandbox_config())).as_dict()
    except Exception as exc:
        return {"mode": state.settings.sandbox, "available": False, "reason": f"{type(exc).__name__}: {exc}"}


@router.get("/readyz")
async def readyz(state: AppState = Depends(get_state)):
    checks = {}
    for name, check in (("database", _check_database), ("broker", _check_broker)):
        try:
            checks[name] = await asyncio.to_thread(check, state)
        except Exception as exc:
            checks[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    try:
        checks["models"] = await _check_models(state)
    except Exception as exc:
        checks["models"] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    ready = all(c["ok"] for c in checks.values())
    # Reported, not required: only code runs need it, and they refuse to start without it.
    body = {"ready": ready, "checks": checks, "sandbox": await _check_sandbox(state)}
    # Checks quote exceptions and endpoint URLs, which may hold a password (http://u:PW@gpu1/v1).
    return JSONResponse(redact_any(body), status_code=200 if ready else 503)


class JobStoreCollector:
    """Jobs by state, steps by state, tokens and queue depth, read from the database at scrape time."""

    def __init__(self, state: AppState):
        self.state = state

    def collect(self):
        with self.state.db.reading() as session:
            jobs = repo.count_jobs_by_status(session)
            steps = repo.count_steps_by_status(session)
            tokens = repo.token_totals(session)
        job_gauge = GaugeMetricFamily("longform_jobs", "Jobs by status", labels=["status"])
        for status in ("queued", "running", "succeeded", "failed", "cancelled"):
            job_gauge.add_metric([status], jobs.get(status, 0))
        yield job_gauge
        step_gauge = GaugeMetricFamily("longform_steps", "Steps by status", labels=["status"])
        for status, count in sorted(steps.items()):
            step_gauge.add_metric([status], count)
        yield step_gauge
        token_counter = CounterMetricFamily("longform_tokens", "Model tokens recorded by steps", labels=["kind"])
        for kind, count in tokens.items():
            token_counter.add_metric([kind], count)
        yield token_counter
        yield GaugeMetricFamily("longform_queue_depth", "Jobs waiting to run", value=jobs.get("queued", 0))
        yield GaugeMetricFamily("longform_scrape_timestamp_seconds", "Time of this scrape", value=time.time())


@router.get("/metrics", response_class=PlainTextResponse)
def metrics(state: AppState = Depends(get_state)):
    registry = CollectorRegistry(auto_describe=False)
    registry.register(JobStoreCollector(state))
    body = generate_latest(registry) + generate_latest(REGISTRY)  # REGISTRY: LLM pool latency, errors, in-flight
    body = redact(body.decode()).encode()  # endpoint labels are URLs, which may hold a password
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")
