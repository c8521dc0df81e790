"""The OpenAI-compatible endpoint pool against the fake vLLM server over real HTTP."""
from __future__ import annotations

import asyncio
import time

import httpx
import openai
import pytest
from prometheus_client import REGISTRY

from agents import text as textutil
from agents.llm import openai_pool
from agents.llm.factory import make_judge_client, make_llm_client
from agents.llm.openai_pool import OpenAIPool
from agents.llm.tokens import SAFETY_MARGIN_TOKENS, count_message_tokens, fit_max_tokens
from agents.llm.types import (
    GenOptions,
    LLMBadRequest,
    LLMClient,
    LLMConnectionError,
    LLMRateLimited,
    LLMServerError,
    LLMTimeout,
    LLMUnavailable,
)
from agents.settings import Settings

ASK = [{"role": "user", "content": "Write a short note about rivers."}]
FAST = dict(backoff_base_s=0.01, backoff_max_s=0.05, probe_interval_s=0.1)


async def wait_until(predicate, timeout_s: float = 5.0, step_s: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(step_s)
    return predicate()


def served_by(server) -> int:
    return server.stats()["status_counts"].get("200", 0)


@pytest.fixture
async def pools():
    made: list[OpenAIPool] = []

    def make(endpoints, **kwargs) -> OpenAIPool:
        pool = OpenAIPool(endpoints, **{**FAST, **kwargs})
        made.append(pool)
        return pool

    yield make
    for pool in made:
        await pool.aclose()


# ----- basics ----------------------------------------------------------------------------


async def test_chat_reports_text_usage_model_and_context(fake_llm, pools):
    fake_llm.update(max_model_len=4096)
    pool = pools([fake_llm.base_url])
    assert isinstance(pool, LLMClient)
    result = await pool.chat(ASK, GenOptions(max_tokens=64))
    assert result.text.strip() and result.finish_reason in ("stop", "length")
    assert result.prompt_tokens > 0 and 0 < result.completion_tokens <= 64
    assert result.latency_s > 0 and result.attempts == 1
    assert result.endpoint == fake_llm.base_url
    assert pool.model_name == "fake-model" and result.model == "fake-model"
    assert pool.context_window == 4096  # max_model_len from /v1/models
    again = await pool.chat(ASK, GenOptions(max_tokens=64))
    assert again.cached_tokens and again.cached_tokens > 0  # usage.prompt_tokens_details.cached_tokens


async def test_complete_is_a_raw_continuation(fake_llm, pools):
    pool = pools([fake_llm.base_url], model="fake-model")
    result = await pool.complete("Once upon a time, by the river,", GenOptions(max_tokens=30))
    assert result.text and result.completion_tokens <= 30
    assert fake_llm.requests()[-1]["path"] == "/v1/completions"


async def test_options_and_vllm_extras_reach_the_server(fake_llm, pools):
    pool = pools([fake_llm.base_url])
    body, request_options = openai_pool._request(
        "chat", ASK, "m",
        GenOptions(max_tokens=9, stop=["\n"], seed=4, top_k=5, repetition_penalty=1.1, min_tokens=3,
                   priority=2, sticky_key="job-1", timeout_s=7, json_schema={"type": "object"}),
    )
    assert {k: body[k] for k in ("max_tokens", "stop", "seed", "top_k", "repetition_penalty", "min_tokens",
                                 "priority")} == {"max_tokens": 9, "stop": ["\n"], "seed": 4, "top_k": 5,
                                                  "repetition_penalty": 1.1, "min_tokens": 3, "priority": 2}
    assert body["response_format"]["type"] == "json_schema"
    assert request_options == {"headers": {"X-Session-ID": "job-1"}, "timeout": 7}
    # min_tokens really reaches the server: a one-word answer is held open until 120 tokens.
    short = await pool.chat([{"role": "user", "content": "Answer in 5 words."}], GenOptions(max_tokens=400))
    held = await pool.chat([{"role": "user", "content": "Answer in 5 words."}],
                           GenOptions(max_tokens=400, min_tokens=120))
    assert short.completion_tokens < 120 <= held.completion_tokens


async def test_count_tokens_uses_the_server_tokenizer(fake_llm, pools):
    pool = pools([fake_llm.base_url])
    text = "The quick brown fox jumps over the lazy dog. " * 20
    assert await pool.count_tokens(text) == textutil.count_tokens(text)  # the fake tokenizes with cl100k
    assert fake_llm.stats()["requests_by_path"].get("/tokenize", 0) >= 1


async def test_count_tokens_calibrates_then_estimates_an_upper_bound(fake_llm, pools):
    pool = pools([fake_llm.base_url])
    texts = [f"Chapter {i}. " + "The mill wheel turned slowly in the cold water. " * (20 + i) for i in range(40)]
    counts = [await pool.count_tokens(t) for t in texts]
    server = [httpx.post(f"{fake_llm.root_url}/tokenize", json={"prompt": t}).json()["count"] for t in texts]
    assert counts[:8] == server[:8]  # calibration samples are exact
    assert all(c >= s for c, s in zip(counts, server))  # afterwards an upper estimate ...
    assert all(c <= s * 1.05 + 8 for c, s in zip(counts, server))  # ... and a tight one
    tokenize_calls = fake_llm.stats()["requests_by_path"].get("/tokenize", 0) - len(texts)  # ours, not the check's
    assert 8 <= tokenize_calls <= 8 + 2  # not one round trip per count


async def test_count_tokens_falls_back_without_tokenize(fake_llm, pools):
    # A base URL whose root serves no /tokenize (like a hosted API): the local approximation.
    pool = pools([fake_llm.root_url + "/nowhere/v1"])
    text = "Rivers carry water to the sea."
    assert await pool.count_tokens(text) == textutil.count_tokens(text)
    assert pool.health()[0]["up"]


async def test_token_budget_fits_the_context_window(fake_llm, pools):
    fake_llm.update(max_model_len=2048)
    pool = pools([fake_llm.base_url])
    await pool.check()  # learns max_model_len
    messages = [{"role": "system", "content": "You are a careful writer."},
                {"role": "user", "content": "Continue the story. " + "The river ran on. " * 150}]
    await count_message_tokens(pool, messages)  # calibrates the local count against /tokenize
    room = await fit_max_tokens(pool, messages, 100_000)
    prompt = await count_message_tokens(pool, messages)
    assert room == 2048 - prompt - SAFETY_MARGIN_TOKENS and room > 0
    # The server (which counts with the chat template) accepts exactly that budget.
    result = await pool.chat(messages, GenOptions(max_tokens=room, min_tokens=room))
    assert result.prompt_tokens + room <= 2048 and result.completion_tokens == room
    with pytest.raises(LLMBadRequest):
        await pool.chat(messages, GenOptions(max_tokens=2048))


# ----- retries, backoff, typed errors ----------------------------------------------------


async def test_server_errors_are_retried_until_success(fake_llm, pools):
    fake_llm.update(error_rate=0.5, seed=7)
    pool = pools([fake_llm.base_url], max_retries=12)
    results = await asyncio.gather(*(pool.chat(ASK, GenOptions(max_tokens=16)) for _ in range(20)))
    failures = fake_llm.stats()["status_counts"].get("500", 0)
    assert failures >= 3  # the faults really happened...
    assert sum(r.attempts - 1 for r in results) == failures  # ...and each one cost exactly one retry
    assert all(r.text for r in results)


async def test_backoff_is_exponential_with_full_jitter(fake_llm, pools, monkeypatch):
    fake_llm.update(error_rate=1.0)
    # Jitter draws uniformly from [0, cap]; drawing the cap itself shows the schedule.
    monkeypatch.setattr(openai_pool.random, "uniform", lambda low, high: high)
    pool = pools([fake_llm.base_url], model="fake-model", max_retries=4, backoff_base_s=0.1, backoff_max_s=0.5)
    with pytest.raises(LLMServerError) as info:
        await pool.chat(ASK)
    assert info.value.status == 500 and info.value.endpoint == fake_llm.base_url
    times = [e["time"] for e in fake_llm.requests()]
    assert len(times) == 5  # the first try and max_retries=4 retries
    gaps = [b - a for a, b in zip(times, times[1:])]
    for gap, cap in zip(gaps, [0.1, 0.2, 0.4, 0.5]):  # doubling, capped at backoff_max_s
        assert cap - 0.05 <= gap <= cap + 0.5, gaps
    monkeypatch.undo()
    delays = [pool._retry_delay(3, LLMServerError("x")) for _ in range(200)]
    assert all(0 <= d <= 0.4 for d in delays) and max(delays) - min(delays) > 0.2  # jittered


async def test_rate_limits_are_retried_then_typed(fake_llm, pools):
    fake_llm.update(rate_limit_rate=1.0)
    pool = pools([fake_llm.base_url], model="fake-model", max_retries=2)
    with pytest.raises(LLMRateLimited) as info:
        await pool.chat(ASK)
    assert info.value.status == 429 and info.value.retryable
    assert fake_llm.stats()["status_counts"] == {"429": 3}


def test_retry_after_is_honoured_and_bounded():
    request = httpx.Request("POST", "http://x/v1/chat/completions")
    pool = OpenAIPool(["http://x/v1"], backoff_max_s=5.0)
    for header, expected in (("1.5", 1.5), ("120", 5.0), ("Wed, 21 Oct 2015 07:28:00 GMT", None)):
        response = httpx.Response(429, headers={"retry-after": header}, request=request)
        try:
            exc = openai.RateLimitError("slow down", response=response, body=None)
        except TypeError:  # openai built on httpx2 wants its own response type
            pytest.skip("openai's exceptions need its own httpx")
        err = openai_pool._map_error(exc, "http://x/v1")
        assert isinstance(err, LLMRateLimited)
        if expected is None:
            assert 0 <= pool._retry_delay(1, err) <= pool.backoff_base_s
        else:
            assert pool._retry_delay(1, err) == expected


async def test_bad_requests_are_not_retried(fake_llm, pools):
    pool = pools([fake_llm.base_url], model="no-such-model")
    with pytest.raises(LLMBadRequest) as info:
        await pool.chat(ASK)
    assert info.value.status == 404 and "no-such-model" in str(info.value)
    too_long = pools([fake_llm.base_url])
    with pytest.raises(LLMBadRequest) as info:
        await too_long.chat(ASK, GenOptions(max_tokens=100_000))  # beyond max_model_len
    assert info.value.status == 400
    assert fake_llm.stats()["generation_requests"] == 2  # one try each


async def test_timeouts_are_typed_and_close_the_request(fake_llm, pools):
    fake_llm.update(hang_rate=1.0)
    pool = pools([fake_llm.base_url], model="fake-model", max_retries=1)
    started = time.monotonic()
    with pytest.raises(LLMTimeout):
        await pool.chat(ASK, GenOptions(timeout_s=0.3))
    assert time.monotonic() - started < 3
    # The server saw both tries end because the client went away (vLLM aborts such requests).
    assert await wait_until(lambda: [e["status"] for e in fake_llm.requests()] == [499, 499])
    assert pool.health()[0]["up"]  # two failures: below down_after_failures=3


async def test_connection_errors_are_typed(fake_llm_factory, pools):
    server = fake_llm_factory()
    url = server.base_url
    server.kill()
    pool = pools([url], model="fake-model", max_retries=1, down_after_failures=10)
    with pytest.raises(LLMConnectionError) as info:
        await pool.chat(ASK)
    assert info.value.endpoint == url and info.value.retryable


async def test_all_endpoints_down_raises_unavailable(fake_llm_factory, pools):
    server = fake_llm_factory()
    url = server.base_url
    server.kill()
    pool = pools([url], model="fake-model", max_retries=3, down_after_failures=2)
    with pytest.raises(LLMUnavailable):
        await pool.chat(ASK)
    health = pool.health()[0]
    assert not health["up"] and "Connection" in health["last_error"]
    assert REGISTRY.get_sample_value("longform_llm_endpoint_up", {"endpoint": url}) == 0


async def test_down_endpoint_is_probed_back(fake_llm_factory, pools):
    server = fake_llm_factory()
    pool = pools([server.base_url], max_retries=10, down_after_failures=1, backoff_base_s=0.2, backoff_max_s=1.0)
    await pool.chat(ASK, GenOptions(max_tokens=8))
    server.kill()
    call = asyncio.create_task(pool.chat(ASK, GenOptions(max_tokens=8)))
    assert await wait_until(lambda: not pool.health()[0]["up"])
    await asyncio.to_thread(server.restart)  # same port, fresh process
    result = await asyncio.wait_for(call, 20)
    assert result.text and result.attempts > 1
    assert pool.health()[0]["up"]
    assert server.stats()["requests_by_path"].get("/health", 0) >= 1  # the probe found it


async def test_an_untyped_transport_failure_in_the_client_is_retried(fake_llm_factory, pools, monkeypatch):
    """The openai client lets some failures of its HTTP stack through untyped (anyio's
    AttributeError on a connection whose peer died under uvloop, OS errors): each is a retried
    connection failure, never a job's crash."""
    server = fake_llm_factory()
    pool = pools([server.base_url], max_retries=3)
    client = pool._endpoints[0].clients[0]
    real_post = client.post
    failures = [AttributeError("'NoneType' object has no attribute 'getpeername'"), ConnectionResetError(104, "reset")]

    async def flaky_post(*args, **kwargs):
        if failures:
            raise failures.pop(0)
        return await real_post(*args, **kwargs)

    monkeypatch.setattr(client, "post", flaky_post)
    result = await pool.chat(ASK, GenOptions(max_tokens=8))
    assert result.text and result.attempts == 3
    assert "ConnectionResetError" in pool.health()[0]["last_error"]


async def test_a_probe_on_a_connection_dropped_under_uvloop_counts_as_down_not_a_crash(pools):
    """anyio on uvloop raises AttributeError ('NoneType' ... 'getpeername') when the peer closed
    a kept-alive connection; a probe that meets it reports the endpoint down and the next one
    can find it back up (an exception would end the probe loop for good)."""
    answers = [AttributeError("'NoneType' object has no attribute 'getpeername'"), httpx.Response(200)]

    def handler(request):
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    pool = pools(["http://127.0.0.1:9/v1"])
    pool._aux = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    endpoint = pool._endpoints[0]
    assert await pool._probe(endpoint) is False and "AttributeError" in endpoint.last_error
    assert await pool._probe(endpoint) is True


# ----- routing: failover, in-flight limit, balance, sticky -------------------------------


async def test_failover_when_an_endpoint_dies_mid_run(fake_llm_factory, pools):
    timing = dict(timing=True, max_num_seqs=8, decode_s_per_token=0.002)
    a, b = fake_llm_factory(**timing), fake_llm_factory(**timing)
    pool = pools([a.base_url, b.base_url], max_inflight=8, down_after_failures=2)
    calls = [asyncio.create_task(pool.chat(ASK, GenOptions(max_tokens=50))) for _ in range(120)]
    await asyncio.sleep(0.4)
    a.kill()  # in-flight requests on `a` lose their connection
    results = await asyncio.gather(*calls)
    assert len(results) == 120 and all(r.completion_tokens > 0 for r in results)
    assert any(r.attempts > 1 for r in results)  # some were retried on the survivor
    health = {h["endpoint"]: h for h in pool.health()}
    assert not health[a.base_url]["up"] and health[b.base_url]["up"]
    assert health[a.base_url]["served"] + health[b.base_url]["served"] == 120
    assert served_by(b) == health[b.base_url]["served"]
    # Back again: the probe returns `a` to the rotation.
    await asyncio.to_thread(a.restart)
    assert await wait_until(lambda: pool.health()[0]["up"], timeout_s=10)
    await asyncio.gather(*(pool.chat(ASK, GenOptions(max_tokens=20)) for _ in range(16)))
    assert served_by(a) > 0


async def test_inflight_limit_is_never_exceeded(fake_llm_factory, pools):
    # The server could run 64 at once; the pool must let only 5 per endpoint through.
    servers = [fake_llm_factory(timing=True, max_num_seqs=64, decode_s_per_token=0.003) for _ in range(2)]
    pool = pools([s.base_url for s in servers], max_inflight=5)
    peak = 0
    done = False

    async def watch():
        nonlocal peak
        while not done:
            peak = max([peak] + [h["inflight"] for h in pool.health()])
            await asyncio.sleep(0)

    watcher = asyncio.create_task(watch())
    await asyncio.gather(*(pool.chat(ASK, GenOptions(max_tokens=30)) for _ in range(60)))
    done = True
    await watcher
    assert peak == 5
    assert [s.stats()["max_running_observed"] for s in servers] == [5, 5]
    assert all(h["inflight"] == 0 for h in pool.health())


async def test_least_outstanding_routing_balances_load(fake_llm_factory, pools):
    fast = dict(timing=True, max_num_seqs=16, decode_s_per_token=0.001)
    a, b = fake_llm_factory(**fast), fake_llm_factory(**fast)
    pool = pools([a.base_url, b.base_url], max_inflight=16)
    # Saturated: both replicas full all the time.
    await asyncio.gather(*(pool.chat(ASK, GenOptions(max_tokens=40)) for _ in range(200)))
    counts = [served_by(a), served_by(b)]
    assert sum(counts) == 200 and abs(counts[0] - counts[1]) <= 30
    # Light load, far below the limit: still spread (not "the first endpoint with room").
    a.reset(), b.reset()
    gate = asyncio.Semaphore(4)

    async def one():
        async with gate:
            await pool.chat(ASK, GenOptions(max_tokens=20))

    await asyncio.gather(*(one() for _ in range(60)))
    assert 20 <= served_by(a) <= 40 and served_by(a) + served_by(b) == 60


async def test_sticky_key_keeps_a_job_on_one_replica(fake_llm_factory, pools):
    a, b = fake_llm_factory(), fake_llm_factory()
    pool = pools([a.base_url, b.base_url])
    await asyncio.gather(*(pool.chat(ASK, GenOptions(max_tokens=8, sticky_key="job-A")) for _ in range(20)))
    per_server = [[e["session_id"] for e in s.requests()] for s in (a, b)]
    assert sorted(len(ids) for ids in per_server) == [0, 20]
    assert set(per_server[0] + per_server[1]) == {"job-A"}  # sent as X-Session-ID
    home = a if per_server[0] else b
    # Stable: another pool (endpoints listed in another order) picks the same replica.
    other = pools([b.base_url, a.base_url])
    result = await other.chat(ASK, GenOptions(max_tokens=8, sticky_key="job-A"))
    assert result.endpoint == home.base_url
    # Different keys spread over both replicas.
    keyed = await asyncio.gather(*(pool.chat(ASK, GenOptions(max_tokens=8, sticky_key=f"job-{i}"))
                                   for i in range(40)))
    assert {r.endpoint for r in keyed} == {a.base_url, b.base_url}
    # The replica dies: the job moves to the survivor and keeps working.
    home.kill()
    moved = await pool.chat(ASK, GenOptions(max_tokens=8, sticky_key="job-A"))
    assert moved.endpoint != home.base_url


async def test_cancelling_the_caller_aborts_the_request(fake_llm, pools):
    fake_llm.update(timing=True, decode_s_per_token=0.01)
    pool = pools([fake_llm.base_url])
    await pool.chat(ASK, GenOptions(max_tokens=4))  # model resolved, connection open
    call = asyncio.create_task(pool.chat(ASK, GenOptions(max_tokens=500)))  # ~5 s of decoding
    assert await wait_until(lambda: fake_llm.stats()["running"] == 1)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert pool.health()[0]["inflight"] == 0
    # The server sees the disconnect at once and frees the sequence's slot.
    assert await wait_until(lambda: fake_llm.stats()["running"] == 0, timeout_s=2)
    assert fake_llm.requests()[-1]["status"] == 499


async def test_metrics_count_requests_tokens_and_errors(fake_llm, pools):
    url = fake_llm.base_url
    labels = {"endpoint": url, "outcome": "ok"}
    before = REGISTRY.get_sample_value("longform_llm_requests_total", labels) or 0
    tokens_before = REGISTRY.get_sample_value("longform_llm_tokens_total", {"endpoint": url, "kind": "completion"}) or 0
    pool = pools([url])
    result = await pool.chat(ASK, GenOptions(max_tokens=16))
    assert REGISTRY.get_sample_value("longform_llm_requests_total", labels) == before + 1
    assert REGISTRY.get_sample_value("longform_llm_tokens_total", {"endpoint": url, "kind": "completion"}) == (
        tokens_before + result.completion_tokens)
    assert REGISTRY.get_sample_value("longform_llm_inflight_requests", {"endpoint": url}) == 0
    fake_llm.update(error_rate=1.0)
    with pytest.raises(LLMServerError):
        await pools([url], max_retries=0).chat(ASK)
    assert REGISTRY.get_sample_value("longform_llm_errors_total", {"endpoint": url, "error": "LLMServerError"}) >= 1
    fresh = pools([url])
    assert fresh.model_name == ""
    checked = await fresh.check()
    assert fresh.model_name == "fake-model"
    assert checked[0]["up"] and set(checked[0]) >= {"endpoint", "up", "inflight", "max_inflight",
                                                     "consecutive_failures", "last_error"}


# ----- factory ---------------------------------------------------------------------------


def test_factory_builds_pools_from_settings(tmp_path):
    settings = Settings(longform_data_dir=str(tmp_path), llm_endpoints="http://a:8000/v1, http://b:8000/v1/",
                        llm_model="m", llm_max_inflight=7)
    client = make_llm_client(settings)
    assert isinstance(client, OpenAIPool) and client.endpoints == ["http://a:8000/v1", "http://b:8000/v1"]
    assert client.model_name == "m" and client.max_inflight == 7
    assert make_judge_client(settings) is None
    judge = make_judge_client(Settings(longform_data_dir=str(tmp_path), judge_endpoints="http://j/v1",
                                       judge_model="judge"))
    assert isinstance(judge, OpenAIPool) and judge.model_name == "judge"


async def test_queued_calls_go_out_by_priority_then_arrival(fake_llm, pools):
    fake_llm.update(timing=True, decode_s_per_token=0.002, scheduling_policy="priority")
    pool = pools([fake_llm.base_url], max_inflight=1)

    def ask(tag, priority=None):
        return pool.chat([{"role": "user", "content": f"call {tag}, about 20 words"}],
                         GenOptions(max_tokens=40, priority=priority))

    first = asyncio.create_task(ask("first", 0))  # holds the only slot
    await asyncio.sleep(0.05)
    queued = [asyncio.create_task(ask(tag, p)) for tag, p in (("p5", 5), ("none", None), ("p1", 1), ("p3", 3), ("p1b", 1))]
    await asyncio.gather(first, *queued)
    order = [r["prompt"].split()[1].rstrip(",") for r in sorted(fake_llm.requests(), key=lambda r: r["time"])
             if r["path"].endswith("completions")]
    assert order == ["first", "p1", "p1b", "p3", "p5", "none"]
