"""The moving parts of the fault campaign (bench/faults.py, tests/test_faults.py): private
Redis and PostgreSQL instances on free ports (never the machine's shared 6379/5432), the
service's processes, a stand-in for the embedded model's child process, a mix of jobs, and
a watcher that records every succeeded step while the faults happen.

Everything here is a context manager or is closed by one, so a failing scenario leaves no
process behind.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.fault_checks import StepMark, all_final, family, step_marks  # noqa: E402
from db import repo  # noqa: E402
from db.schema import upgrade  # noqa: E402
from db.session import Database  # noqa: E402
from tests.processes import LongformProcess, start_serve, start_worker  # noqa: E402

BOOK = REPO / "tests" / "data" / "pride_and_prejudice.txt"
# The fake server in vLLM timing mode, slow enough that a fault lands in the middle of jobs.
TIMING = dict(timing=True, max_num_seqs=16, decode_s_per_token=0.003, ttft_s=0.01, max_model_len=16384)
SHARED_PORTS = (5432, 6379)
WORKER_SLOTS = 6  # jobs at once per scenario (serve's worker; Celery: two workers of half each)


def free_port() -> int:
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in SHARED_PORTS:
            return port


def _wait_port(port: int, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        with socket.socket() as sock:
            sock.settimeout(0.5)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port} after {timeout} s")


# -- private Redis and PostgreSQL --------------------------------------------------------------


class PrivateRedis:
    """redis-server on a free port, no persistence: a restart loses every message, as a
    Redis without AOF does."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.log = tempfile.NamedTemporaryFile(prefix="fault-redis-", suffix=".log", delete=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "PrivateRedis":
        assert self.port not in SHARED_PORTS
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--daemonize", "no"],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        _wait_port(self.port, 20, self.proc)
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def __enter__(self) -> "PrivateRedis":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.kill()
        self.log.close()
        os.unlink(self.log.name)


class PrivatePostgres:
    """A PostgreSQL cluster of its own (initdb in a temporary directory, trust auth, a free
    port); restart() stops it the hard way and starts it again on the same port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="fault-pg-"))
        self.data = self.dir / "data"
        self.bin = self._bin_dir()
        self.as_postgres = os.geteuid() == 0  # initdb refuses to run as root
        if self.as_postgres:
            shutil.chown(self.dir, "postgres", "postgres")

    @staticmethod
    def _bin_dir() -> Path:
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        if not found:
            raise RuntimeError("no PostgreSQL server binaries under /usr/lib/postgresql")
        return found[-1].parent

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [str(self.bin / args[0]), *args[1:]]
        if self.as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, check=check, cwd=self.dir)

    def admin_url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        assert self.port not in SHARED_PORTS
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.dir / "server.log"), "-o", options, "-w",
                  "-t", "60", "start")

    def stop(self, mode: str = "immediate") -> None:
        """immediate: every connection drops at once, no clean shutdown (like a crash)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def restart(self, down_s: float = 2.0) -> None:
        self.stop()
        time.sleep(down_s)
        self.start()

    def create_database(self, name: str) -> str:
        import sqlalchemy as sa

        admin = sa.create_engine(self.admin_url(), isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        finally:
            admin.dispose()
        url = self.admin_url(name)
        upgrade(url)
        return url

    def __enter__(self) -> "PrivatePostgres":
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


# -- a stand-in for the embedded model's child process ------------------------------------------


def fake_model_interpreter(directory: Path, **fake_config: Any) -> str:
    """An executable to give ModelProcess as its `python`: started as `<it> -m modelserver
    --port N ...`, it runs the fake server on that port instead of llama.cpp (tests never
    start the real model). The supervisor sees a child it can kill and restart like the real one."""
    script = directory / "fake-modelserver"
    config = json.dumps({**TIMING, **fake_config})
    script.write_text(
        "#!/bin/sh\n"
        f"cd {REPO}\n"
        f"exec {sys.executable} -m bench.fault_model_child --config-json '{config}' \"$@\"\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return str(script)


# -- the service --------------------------------------------------------------------------------


class Stack:
    """One scenario's service: a database, `longform serve` and/or Celery workers, and the
    processes to kill. Closed on exit, whatever happened."""

    def __init__(self, tmp: Path, database_url: str, llm_endpoints: str, **env: str):
        self.tmp = tmp
        self.db = Database(database_url)
        self.env = {"DATABASE_URL": database_url, "LLM_ENDPOINTS": llm_endpoints, "LONGFORM_DATA_DIR": str(tmp),
                    "JOB_LEASE_SECONDS": "3", "LLM_TIMEOUT_S": "20", "REQUIRE_API_KEYS": "auto",
                    "WORKER_CONCURRENCY": str(WORKER_SLOTS), **env}
        with self.db.session() as s:
            self.key, _ = repo.create_api_key(s, "fault-campaign", is_admin=True)
        self.serve: LongformProcess | None = None
        self.api_url = ""
        self.workers: list[LongformProcess] = []
        self._names = 0

    def _name(self, what: str) -> str:
        self._names += 1
        return f"{what}-{self._names}"

    def start_serve(self) -> str:
        self.serve, self.api_url = start_serve(self.env, self.tmp, self._name("serve"))
        return self.api_url

    def kill_serve(self) -> None:
        if self.serve is not None:
            self.serve.kill()

    def start_worker(self, concurrency: int = WORKER_SLOTS // 2) -> LongformProcess:
        worker = start_worker(self.env, self.tmp, self._name("worker"), concurrency=concurrency)
        self.workers.append(worker)
        return worker

    @contextlib.contextmanager
    def client(self) -> Iterator[httpx.Client]:
        with httpx.Client(base_url=self.api_url, timeout=60,
                          headers={"Authorization": f"Bearer {self.key}"}) as client:
            yield client

    def logs(self) -> str:
        return "\n".join(f"== {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted(self.tmp.glob("*.log")))

    def close(self) -> None:
        for proc in [self.serve, *self.workers]:
            if proc is not None:
                try:
                    proc.stop()
                except Exception:  # already gone, or its log closed by kill()
                    pass
        self.db.engine.dispose()


@contextlib.contextmanager
def sqlite_stack(llm_endpoints: str, **env: str) -> Iterator[Stack]:
    with tempfile.TemporaryDirectory(prefix="fault-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'longform.db'}"
        upgrade(url)
        stack = Stack(Path(tmp), url, llm_endpoints, **env)
        try:
            yield stack
        finally:
            stack.close()


@contextlib.contextmanager
def celery_stack(postgres_url: str, broker_url: str, llm_endpoints: str, **env: str) -> Iterator[Stack]:
    with tempfile.TemporaryDirectory(prefix="fault-") as tmp:
        stack = Stack(Path(tmp), postgres_url, llm_endpoints, BROKER_URL=broker_url, **env)
        try:
            yield stack
        finally:
            stack.close()


# -- the jobs -------------------------------------------------------------------------------------

# A mix of kinds; each entry is (label, path, body). Sizes keep one scenario well under a minute.
WRITE_AGENTWRITE = {"kind": "write", "params": {
    "instruction": "Write a history of lighthouses in about 3000 words.", "target_words": 3000}}
WRITE_SINGLE = {"kind": "write", "params": {
    "instruction": "Write a short essay about tides.", "target_words": 300, "method": "single"}}
SOLVE_TEXT = {"kind": "solve", "params": {"question": "What is 17 * 23? Give the answer as <<<answer>>>.",
                                          "method": "text"}}
SOLVE_STEER = {"kind": "solve", "params": {"question": "Sort the numbers 5, 3, 9, 1. Give the answer as <<<answer>>>.",
                                           "method": "steer", "max_turns": 2}}
CHAT = {"kind": "chat", "params": {"messages": [{"role": "user", "content": "Describe a harbour at dawn."}],
                                   "max_tokens": 200}}
DATASET = {"items": [{"instruction": "Write a short story about a lantern.", "target_words": 300},
                     {"instruction": "Write a short essay about rivers.", "target_words": 300}],
           "formats": ["longwriter"]}

MIXES = {
    "write": ("/v1/jobs", WRITE_AGENTWRITE),
    "write-single": ("/v1/jobs", WRITE_SINGLE),
    "summarize": ("/v1/jobs", None),  # needs the document: filled in by submit_mix
    "solve": ("/v1/jobs", SOLVE_TEXT),
    "solve-steer": ("/v1/jobs", SOLVE_STEER),
    "chat": ("/v1/jobs", CHAT),
    "chat-short": ("/v1/jobs", {"kind": "chat", "params": {**CHAT["params"], "max_tokens": 60}}),
    "dataset": ("/v1/datasets", DATASET),
}
# 10 jobs and the dataset's 2 children: more than run at once (WORKER_SLOTS), so some wait
# in the queue when the fault hits.
DEFAULT_MIX = ("write", "write", "write", "write-single", "summarize", "summarize", "dataset", "solve",
               "solve-steer", "chat")



def book_excerpt(chars: int = 60_000) -> str:
    """The first chapters of the bundled book: a few chunks and merges, not the whole tree."""
    text = BOOK.read_text(encoding="utf-8")
    start = text.find("Chapter 1")
    return text[start if start >= 0 else 0:][:chars]


def submit_mix(client: httpx.Client, kinds: tuple[str, ...] = DEFAULT_MIX, tag: str = "") -> list[str]:
    """Submit one job per entry of `kinds` (see MIXES); returns their ids. `tag` makes the
    instructions differ between scenarios (the fake server's text follows the prompt)."""
    document_id = None
    ids = []
    for i, kind in enumerate(kinds):
        path, body = MIXES[kind]
        if kind == "summarize":
            if document_id is None:
                response = client.post("/v1/documents", content=book_excerpt().encode(),
                                       headers={"Content-Type": "text/plain"}, params={"name": f"book{tag}"})
                response.raise_for_status()
                document_id = response.json()["id"]
            body = {"kind": "summarize", "params": {"document_id": document_id, "target_words": 300 + i}}
        else:
            body = json.loads(json.dumps(body))
            if tag and "params" in body and "instruction" in body["params"]:
                body["params"]["instruction"] += f" ({tag} {i})"
        response = client.post(path, json=body)
        response.raise_for_status()
        ids.append(response.json()["id"])
    return ids


# -- watching steps while faults happen ------------------------------------------------------------


class StepWatcher:
    """Polls the succeeded steps of the submitted jobs; a step seen succeeded once and later
    executed again (new attempt or finished_at) or gone is a re-run step."""

    def __init__(self, db: Database, job_ids: list[str]):
        self.db = db
        self.job_ids = job_ids
        self.first_seen: dict[tuple[str, str], StepMark] = {}
        self.reruns: set[str] = set()

    def poll(self) -> int:
        """Record the steps now; returns how many have succeeded."""
        try:
            marks = step_marks(self.db, self.job_ids)
        except Exception:  # the database is restarting: look again at the next poll
            return len(self.first_seen)
        for key, mark in marks.items():
            seen = self.first_seen.setdefault(key, mark)
            if seen != mark:
                self.reruns.add(f"{key[0]}:{key[1]}")
        return len(marks)

    def finish(self) -> list[str]:
        marks = step_marks(self.db, self.job_ids)
        for key, mark in self.first_seen.items():
            if marks.get(key) != mark:
                self.reruns.add(f"{key[0]}:{key[1]}")
        return sorted(self.reruns)

    def wait_steps(self, count: int, timeout: float) -> int:
        """Wait until `count` steps have succeeded (or every job ended); returns the count."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = self.poll()
            if done >= count or self._all_final():
                return done
            time.sleep(0.2)
        raise TimeoutError(f"only {len(self.first_seen)} of {count} steps succeeded in {timeout} s")

    def _all_final(self) -> bool:
        try:
            return all_final(self.db, self.job_ids)
        except Exception:
            return False

    def wait_final(self, timeout: float, while_waiting: Callable[[], None] | None = None) -> bool:
        """Poll until every job and child is final or `timeout` passes; True if all ended."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.poll()
            if while_waiting is not None:
                while_waiting()
            if self._all_final():
                return True
            time.sleep(0.5)
        return False

    def running_jobs(self) -> int:
        return sum(1 for j in family(self.db, self.job_ids) if j.status == "running")
