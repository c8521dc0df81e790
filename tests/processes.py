"""Start real Longform processes (`longform serve`, `longform worker`) for integration tests."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.api_server import free_port

REPO = Path(__file__).resolve().parent.parent


class LongformProcess:
    def __init__(self, args: list[str], env: dict[str, str], log_path: Path):
        self.log_path = log_path
        self.log = open(log_path, "ab")
        full_env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "api.cli", *args], cwd=REPO, env=full_env,
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def kill(self) -> None:
        """SIGKILL the whole process group: no clean-up runs, as in a crash."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.log.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.log.close()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_serve(env: dict[str, str], tmp_path: Path, name: str = "serve") -> tuple[LongformProcess, str]:
    port = free_port()
    proc = LongformProcess(["serve", "--port", str(port)], env, tmp_path / f"{name}.log")
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.proc.poll() is not None:
            raise RuntimeError(f"longform serve exited:\n{proc.output()}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"longform serve did not start:\n{proc.output()}")


def start_worker(env: dict[str, str], tmp_path: Path, name: str = "worker", concurrency: int = 8) -> LongformProcess:
    proc = LongformProcess(["worker", "--concurrency", str(concurrency)], env, tmp_path / f"{name}.log")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.proc.poll() is not None:
            raise RuntimeError(f"longform worker exited:\n{proc.output()}")
        if "ready" in proc.output():
            return proc
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"longform worker did not become ready:\n{proc.output()}")
