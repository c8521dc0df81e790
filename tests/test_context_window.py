"""The pool's context window comes from the servers' /v1/models, and the judge reports every
answer it could not rate (per length bin, with the reason) instead of dropping it."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from agents.evaluation import EvalItem, render_table, run_prompt_set
from agents.llm.factory import make_judge_client
from agents.llm.openai_pool import OpenAIPool
from agents.metrics.longbench_write import judge_quality
from agents.settings import Settings

FALLBACK = 6000  # the configured window (LLM_CONTEXT_WINDOW), used only when no server reports one


@pytest.fixture
async def pools():
    made: list[OpenAIPool] = []

    def make(endpoints, **kwargs) -> OpenAIPool:
        pool = OpenAIPool(endpoints, **{"context_window": FALLBACK, "backoff_base_s": 0.01, **kwargs})
        made.append(pool)
        return pool

    yield make
    for pool in made:
        await pool.aclose()


@pytest.fixture
def plain_server():
    """An OpenAI-compatible listing without max_model_len (a hosted API): /v1/models lists
    `plain-model`; /nolist/v1/models answers 404."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the http.server hook
            if self.path == "/v1/models":
                body, status = {"object": "list", "data": [{"id": "plain-model", "object": "model"}]}, 200
            else:
                body, status = {"error": {"message": "not found"}}, 404
            raw = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


async def test_pinned_model_learns_max_model_len(fake_llm_factory, pools):
    server = fake_llm_factory(max_model_len=4096)
    pool = pools([server.base_url], model=server.model)
    assert pool.context_window == FALLBACK  # nothing asked yet
    await pool.ensure_ready()
    assert pool.context_window == 4096 and pool.model_name == server.model
    # A fresh pool learns it before its first token count returns (budgets read it next).
    fresh = pools([server.base_url], model=server.model)
    await fresh.count_tokens("How long may the answer be?")
    assert fresh.context_window == 4096
    # ... and before its first chat returns.
    chatty = pools([server.base_url], model=server.model)
    await chatty.chat([{"role": "user", "content": "Hello"}])
    assert chatty.context_window == 4096


async def test_pinned_model_finds_its_own_entry(fake_llm_factory, pools):
    server = fake_llm_factory(max_model_len=3000)
    pool = pools([server.base_url], model="another-model")  # not listed: the first entry's limit
    await pool.check()
    assert pool.context_window == 3000 and pool.model_name == "another-model"


async def test_several_endpoints_give_the_smallest_limit(fake_llm_factory, pools):
    big, small = fake_llm_factory(max_model_len=16384), fake_llm_factory(max_model_len=4096)
    for order in ([big.base_url, small.base_url], [small.base_url, big.base_url]):
        pool = pools(order, model="fake-model")
        await pool.check()
        assert pool.context_window == 4096


async def test_an_endpoint_unreachable_at_start_is_asked_before_its_first_call(fake_llm_factory, pools):
    big, small = fake_llm_factory(max_model_len=16384), fake_llm_factory(max_model_len=4096)
    small_url = small.base_url
    small.stop()
    pool = pools([big.base_url, small_url], model="fake-model")
    await pool.ensure_ready()
    assert pool.context_window == 16384  # only `big` answered
    small.restart()
    for _ in range(4):  # requests spread over both endpoints
        await pool.chat([{"role": "user", "content": "Hello"}])
    assert pool.context_window == 4096


async def test_server_without_max_model_len_falls_back_to_the_setting(plain_server, pools):
    listed = pools([plain_server + "/v1"])  # no model configured: the listing names it
    await listed.ensure_ready()
    assert listed.model_name == "plain-model" and listed.context_window == FALLBACK
    unlisted = pools([plain_server + "/nolist/v1"], model="m")
    await unlisted.ensure_ready()
    assert unlisted.context_window == FALLBACK


async def test_judge_client_learns_the_window_and_reports_unjudged_answers(fake_llm_factory):
    server = fake_llm_factory(max_model_len=2048)
    judge = make_judge_client(Settings(judge_endpoints=server.base_url, judge_model=server.model,
                                       llm_context_window=32768))
    try:
        assert judge is not None
        long_answer = "The river ran on past the mill. " * 1200  # ~7,000 words
        short_answer = "The river ran on past the mill."

        async def run_item(item: EvalItem, method: str, protocol: str):
            answer = long_answer if item.length > 4000 else short_answer
            verdict = await judge_quality(judge, item.prompt, answer)
            return {"word_count": len(answer.split()),
                    "scores": {"quality_status": verdict["status"], "quality": verdict.get("ratings"),
                               "quality_error": verdict.get("error")}}

        items = [EvalItem(0, "Write a short note.", "Note", 10), EvalItem(1, "Write a saga.", "Story", 7000),
                 EvalItem(2, "Write another saga.", "Story", 9000)]
        report = await run_prompt_set(items, run_item, ("agentwrite",))
    finally:
        await judge.aclose()
    assert judge.context_window == 2048  # the server's figure, not the 32768 setting
    method = report["methods"]["agentwrite/controlled"]
    reason = "does not fit the judge's context (> 2048 tokens)"
    assert method["unjudged"] == {"[4k,20k]": {"count": 2, "reasons": {reason: 2}}}
    assert method["overall"]["judged"] == 1 and method["overall"]["missing"] == 2
    long_rows = [r for r in report["items"] if r["length"] > 4000]
    assert all(r["quality_error"].startswith("does not fit the judge's context (") for r in long_rows)
    assert " > 2048)" in long_rows[0]["quality_error"]
    table = render_table(report)
    assert "Not judged" in table and f"agentwrite/controlled [4k,20k]: 2 ({reason}: 2)" in table
