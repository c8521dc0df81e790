"""The embedded model in its own supervised process: a native crash never takes the API down.

Most tests run the real SmolLM2 model (marker `model`); the self-test failure needs only
llama-cpp-python.
"""
from __future__ import annotations

import asyncio
import os
import re
import signal
import time

import httpx
import pytest

from agents.llm.embedded_process import READY, EmbeddedModel, ModelProcess
from agents.llm.factory import make_llm_client
from agents.llm.types import GenOptions, LLMUnavailable
from agents.settings import Settings
from tests.api_server import running_api, wait_for_job, wait_until
from tests.db_fixtures import sqlite_url

LONG_CHAT = {"messages": [{"role": "user", "content": "Write a long story about a lighthouse keeper."}],
             "max_tokens": 300, "min_tokens": 300, "temperature": 0.7}
SHORT_CHAT = {"messages": [{"role": "user", "content": "What is the capital of France?"}], "max_tokens": 20}


def model_state(api: httpx.Client) -> dict:
    return api.get("/readyz").json()["checks"]["models"]


def metric(text: str, name: str) -> float:
    return float(re.search(rf"^{name} (\S+)$", text, re.M).group(1))




@pytest.fixture
def embedded_api(tmp_path):
    settings = Settings(longform_data_dir=str(tmp_path), database_url=sqlite_url(tmp_path), llm_context_window=2048)
    with running_api(settings) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield client


@pytest.mark.slow
def test_a_model_that_cannot_run_is_reported_and_jobs_fail_with_the_reason(tmp_path):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"not a model" * 100)
    settings = Settings(longform_data_dir=str(tmp_path), database_url=sqlite_url(tmp_path),
                        embedded_model_path=str(broken))
    with running_api(settings) as url, httpx.Client(base_url=url, timeout=30) as api:
        assert api.get("/healthz").status_code == 200  # serve starts anyway
        job_id = api.post("/v1/jobs", json={"kind": "chat", "params": SHORT_CHAT}).json()["id"]
        job = wait_for_job(api, job_id, timeout=120)
        assert job["status"] == "failed"
        assert "cannot run here" in job["error"] and "self-test did not pass" in job["error"], job["error"]
        ready = api.get("/readyz")
        assert ready.status_code == 503
        models = ready.json()["checks"]["models"]
        assert models["state"] == "failed" and not models["ok"] and "exited with code 3" in models["reason"]


@pytest.mark.model
@pytest.mark.slow
@pytest.mark.parametrize("kill_signal", [signal.SIGKILL, signal.SIGSEGV], ids=["sigkill", "segfault"])
def test_killing_the_model_process_mid_job_leaves_the_api_and_other_jobs_alone(embedded_api, kill_signal):
    api = embedded_api
    wait_until(lambda: model_state(api)["state"] == "ready", 120, "the model process")
    first_pid = model_state(api)["pid"]
    victim = api.post("/v1/jobs", json={"kind": "chat", "params": LONG_CHAT}).json()["id"]
    wait_until(lambda: api.get(f"/v1/jobs/{victim}").json()["status"] == "running", 30, "the job to start")
    time.sleep(1.0)  # in the middle of its generation
    os.kill(first_pid, kill_signal)

    assert api.get("/healthz").status_code == 200  # the API keeps answering
    bystander = api.post("/v1/jobs", json={"kind": "chat", "params": SHORT_CHAT}).json()["id"]
    state = wait_until(lambda: (s := model_state(api))["state"] == "ready" and s["pid"] != first_pid and s, 120,
                       "the restarted model process")
    assert state["restarts"] >= 1 and signal.Signals(kill_signal).name in state["last_exit"]
    # The call in flight is retried on the restarted process: the job finishes.
    assert wait_for_job(api, victim, timeout=300)["status"] == "succeeded"
    other = wait_for_job(api, bystander, timeout=300)
    assert other["status"] == "succeeded" and other["result"]["text"].strip()
    metrics = api.get("/metrics").text
    assert metric(metrics, "longform_embedded_model_restarts_total") >= 1  # counted per process: earlier tests add
    assert metric(metrics, "longform_embedded_model_up") == 1


@pytest.mark.model
async def test_a_call_that_keeps_crashing_the_process_fails_with_a_clear_reason(tmp_path):
    client = make_llm_client(Settings(longform_data_dir=str(tmp_path), llm_context_window=2048, llm_max_retries=1))
    assert isinstance(client, EmbeddedModel)
    try:
        await client.start()

        async def kill_while_busy():
            while True:
                await asyncio.sleep(0.3)
                if client.process.state == "ready":
                    os.kill(client.process.pid, signal.SIGSEGV)

        killer = asyncio.create_task(kill_while_busy())
        try:
            with pytest.raises(Exception) as raised:
                await client.complete("Once upon a time", GenOptions(max_tokens=400, min_tokens=400))
        finally:
            killer.cancel()
        assert "the embedded model process died during the call: killed by SIGSEGV" in str(raised.value)
    finally:
        await client.aclose()
    assert client.process.state == "stopped"


@pytest.mark.model
async def test_cancelling_a_call_frees_the_model_at_once(tmp_path):
    client = make_llm_client(Settings(longform_data_dir=str(tmp_path), llm_context_window=2048))
    try:
        probe = await client.complete("The river", GenOptions(max_tokens=30, min_tokens=30))
        seconds_per_token = probe.latency_s / probe.completion_tokens
        task = asyncio.create_task(client.complete("Write a very long story.", GenOptions(max_tokens=1800, min_tokens=1800)))
        await asyncio.sleep(1.0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        started = time.perf_counter()
        await client.complete("Hello", GenOptions(max_tokens=2))  # waits for the model to be free
        assert time.perf_counter() - started < max(2.0, 1800 * seconds_per_token / 4)
    finally:
        await client.aclose()


def test_a_stopped_process_refuses_calls_with_its_state(tmp_path):
    process = ModelProcess(model_path=str(tmp_path / "missing.gguf"))
    process.stop()
    client = EmbeddedModel(process)

    async def call():
        with pytest.raises(LLMUnavailable, match="stopped"):
            await client.chat([{"role": "user", "content": "hi"}])
        await client.aclose()

    asyncio.run(call())


class _ReadyProcess:
    """A process record that says it is ready, for the client's own retry logic (no model)."""
    state = READY
    port = 9
    base_url = "http://127.0.0.1:9/v1"
    start_timeout_s = 1.0
    restarts = 0

    def __init__(self):
        self.settled = 0

    def wait_settled(self, timeout):
        self.settled += 1
        return READY


async def test_a_tokenizer_connection_dropped_under_uvloop_is_retried_not_raised(monkeypatch):
    """anyio on uvloop raises AttributeError ('NoneType' ... 'getpeername') when a kept-alive
    connection's peer died; that is a transport failure, retried after the process settles."""
    answers = [AttributeError("'NoneType' object has no attribute 'getpeername'"),
               httpx.Response(200, json={"count": 7}), OSError("connection reset"), OSError("connection reset"),
               OSError("connection reset")]

    def handler(request):
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    process = _ReadyProcess()
    client = EmbeddedModel(process)
    monkeypatch.setattr(client._pool, "ensure_ready", lambda: asyncio.sleep(0))
    client._tokenizer = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    assert await client.count_tokens("some text") == 7 and process.settled == 1

    with pytest.raises(LLMUnavailable, match="tokenizer: connection reset"):  # three failures in a row
        await client.count_tokens("more text")
    await client._tokenizer.aclose()
