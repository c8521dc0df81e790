"""Start the fake server in a subprocess for tests and benchmarks.

A subprocess (not a thread) so it uses its own core, and so a test can kill it to simulate a
dying server. It binds port 0 and reports the port through a file, so there is no race for
a free port.

    with FakeServer(timing=True, max_num_seqs=8) as srv:
        client = OpenAI(base_url=srv.base_url, api_key="x")
        srv.update(error_rate=0.2)
        print(srv.stats()["max_running_observed"])
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from fakellm.config import FakeConfig

_REPO_ROOT = str(Path(__file__).resolve().parent.parent)


class FakeServerError(RuntimeError):
    pass


class FakeServer:
    def __init__(self, *, host: str = "127.0.0.1", startup_timeout_s: float = 30.0, **config: Any):
        FakeConfig().update(config)  # fail fast on unknown fields or bad values
        self.host = host
        self.config = config
        self.startup_timeout_s = startup_timeout_s
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None
        self._dir: str | None = None
        self._http = httpx.Client(timeout=10.0, trust_env=False)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, port: int = 0) -> "FakeServer":
        if self.alive:
            raise FakeServerError("already running")
        self._dir = self._dir or tempfile.mkdtemp(prefix="fakellm-")
        port_file = os.path.join(self._dir, "port")
        if os.path.exists(port_file):
            os.unlink(port_file)
        env = dict(os.environ)
        env["PYTHONPATH"] = _REPO_ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        cmd = [sys.executable, "-m", "fakellm", "--host", self.host, "--port", str(port),
               "--port-file", port_file, "--config-json", json.dumps(self.config)]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=env, cwd=_REPO_ROOT, start_new_session=True)
        deadline = time.monotonic() + self.startup_timeout_s
        while not os.path.exists(port_file):
            self._check_started(deadline)
            time.sleep(0.02)
        self.port = int(Path(port_file).read_text())
        while True:
            self._check_started(deadline)
            try:
                if self._http.get(self.root_url + "/health", timeout=1.0).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.02)

    def _check_started(self, deadline: float) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise FakeServerError(f"fake server exited with {self.proc.returncode}:\n{self.log_tail()}")
        if time.monotonic() > deadline:
            self.kill()
            raise FakeServerError(f"fake server did not start in {self.startup_timeout_s}s:\n{self.log_tail()}")

    def restart(self, **config: Any) -> "FakeServer":
        """Start again on the same port (after kill() or a `die` fault): same URLs, fresh state.
        Config given here is merged into the start config (e.g. die_after=None)."""
        if config:
            FakeConfig().update({**self.config, **config})
            self.config = {**self.config, **config}
        self.stop()
        return self.start(port=self.port or 0)

    def stop(self, timeout_s: float = 5.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: the server vanishes mid-run, connections drop."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def close(self) -> None:
        self.stop()
        self._http.close()
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> "FakeServer":
        return self if self.alive else self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def log_path(self) -> str:
        if not self._dir:
            self._dir = tempfile.mkdtemp(prefix="fakellm-")
        return os.path.join(self._dir, "server.log")

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return Path(self.log_path).read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    # -- URLs and admin calls --------------------------------------------------------------

    @property
    def root_url(self) -> str:
        if self.port is None:
            raise FakeServerError("not started")
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI base URL (ends in /v1)."""
        return self.root_url + "/v1"

    @property
    def model(self) -> str:
        return self.config.get("model", FakeConfig.model)

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        resp = self._http.request(method, self.root_url + path, **kwargs)
        if resp.status_code >= 400:
            raise FakeServerError(f"{method} {path}: {resp.status_code} {resp.text}")
        return resp.json()

    def update(self, **config: Any) -> dict[str, Any]:
        """Change the running server's config (partial); returns the whole config."""
        return self._call("POST", "/admin/config", json=config)

    def get_config(self) -> dict[str, Any]:
        return self._call("GET", "/admin/config")

    def stats(self) -> dict[str, Any]:
        return self._call("GET", "/admin/stats")

    def requests(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The request log: path, time, status, session_id, prompt, max_tokens, tokens, fault..."""
        params = {"limit": limit} if limit else None
        return self._call("GET", "/admin/requests", params=params)["requests"]

    def reset(self, config: bool = False) -> None:
        """Clear the log, counters and prefix cache; config=True also restores the start config."""
        self._call("POST", "/admin/reset", json={"config": config})

    def metrics(self) -> str:
        resp = self._http.get(self.root_url + "/metrics")
        resp.raise_for_status()
        return resp.text


def start_fake_server(**config: Any) -> FakeServer:
    """A started FakeServer (call .close() or use it as a context manager)."""
    return FakeServer(**config).start()
