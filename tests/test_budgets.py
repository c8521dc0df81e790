"""Budgets: per-job caps on model calls and tokens (`max_calls`, `max_tokens_total`)."""
import asyncio

import httpx
import pytest

from agents.context import Budget, BudgetExceeded, JobContext, MemoryStepStore
from agents.settings import Settings
from db import repo
from db.models import Job
from db.session import Database
from tests.api_server import running_api, wait_for_job
from tests.db_fixtures import sqlite_url
from tests.kinds_fixture import register_kind
from tests.scripted_llm import CountingLLM
from tests.step_agent import StepsParams, run as run_steps
from workers.runtime import WorkerRuntime

# CountingLLM: every call uses 10 prompt + 3 completion tokens.


@pytest.fixture(autouse=True)
def steps_kind(monkeypatch):
    register_kind(monkeypatch, "steps", "tests.step_agent:KIND")


# ---- the context ------------------------------------------------------------------------


async def test_a_job_stops_before_the_call_past_its_cap_and_resumes_with_a_higher_one():
    llm, store = CountingLLM(), MemoryStepStore()
    ctx = JobContext(llm, store=store, budget=Budget(max_calls=2))
    with pytest.raises(BudgetExceeded, match=r"budget of 2 model calls is spent \(2 used\); raise max_calls"):
        await run_steps(ctx, StepsParams(steps=4))
    assert len(llm.calls) == 2 and set(store.outputs) == {"part/0", "part/1"}
    assert "BudgetExceeded" in store.errors["part/2"]

    used = Budget(max_calls=4, calls=2, tokens=26)  # what the worker loads from the stored steps
    ctx = JobContext(llm, store=store, budget=used)
    result = await run_steps(ctx, StepsParams(steps=4))
    assert result["parts"] == 4 and len(llm.calls) == 4  # parts 0 and 1 came from their checkpoints
    assert used.calls == 4 and used.tokens == 52 and used.in_flight == 0


async def test_concurrent_calls_never_pass_the_cap_together():
    llm = CountingLLM(delay_s=0.05)
    ctx = JobContext(llm, budget=Budget(max_calls=3))

    async def one(i):
        return await ctx.step(f"s/{i}", lambda: ctx.llm.chat([{"role": "user", "content": str(i)}]))

    outcomes = await asyncio.gather(*(one(i) for i in range(6)), return_exceptions=True)
    assert sum(isinstance(o, BudgetExceeded) for o in outcomes) == 3
    assert len(llm.calls) == 3 and ctx.budget.in_flight == 0


async def test_the_token_cap_is_checked_before_each_call_so_the_last_may_overshoot():
    llm = CountingLLM()
    ctx = JobContext(llm, budget=Budget(max_tokens_total=30))
    with pytest.raises(BudgetExceeded, match=r"budget of 30 tokens is spent \(39 used\); raise max_tokens_total"):
        await run_steps(ctx, StepsParams(steps=5))
    assert len(llm.calls) == 3  # 13, 26 (< 30: one more call), 39


async def test_the_judge_draws_on_the_same_budget():
    llm, judge = CountingLLM(), CountingLLM()
    ctx = JobContext(llm, judge=judge, budget=Budget(max_calls=2))
    await ctx.llm.chat([{"role": "user", "content": "a"}])
    await ctx.judge.chat([{"role": "user", "content": "b"}])
    with pytest.raises(BudgetExceeded):
        await ctx.judge.chat([{"role": "user", "content": "c"}])


async def test_zero_or_none_is_unlimited_and_a_failed_call_is_not_counted():
    class Failing(CountingLLM):
        async def chat(self, messages, options=None):
            raise RuntimeError("down")

    ctx = JobContext(Failing(), budget=Budget(max_calls=0, max_tokens_total=None))
    assert not ctx.budget.limited
    with pytest.raises(RuntimeError):
        await ctx.llm.chat([{"role": "user", "content": "x"}])
    assert ctx.budget.calls == 0 and ctx.budget.in_flight == 0


# ---- the worker and the store -----------------------------------------------------------


async def test_the_worker_fails_the_job_with_the_reason_and_a_retry_with_a_higher_cap_goes_on(tmp_path):
    url = sqlite_url(tmp_path)
    db = Database(url)
    llm = CountingLLM()
    runtime = WorkerRuntime(Settings(database_url=url, longform_data_dir=str(tmp_path)), llm=llm, judge=None)
    with db.session() as s:
        job_id = repo.create_job(s, "steps", {"steps": 5}, max_calls=2)[0].id
    assert await runtime.run_job(job_id) == "failed"
    with db.session() as s:
        job = repo.get_job(s, job_id)
        assert job.error == ("BudgetExceeded: the job's budget of 2 model calls is spent (2 used); "
                             "raise max_calls to go on")
        assert repo.succeeded_steps(s, job_id).keys() == {"part/0", "part/1"}
        job.max_calls = 3  # the earlier run's 2 calls count: one more is allowed
        repo.requeue_for_retry(s, job)
    assert await runtime.run_job(job_id) == "failed"
    assert len(llm.calls) == 3
    with db.session() as s:
        job = repo.get_job(s, job_id)
        assert "(3 used)" in job.error and len(repo.succeeded_steps(s, job_id)) == 3
        job.max_calls, job.max_tokens_total = None, 100  # 39 tokens used; 26 more to go
        repo.requeue_for_retry(s, job)
    assert await runtime.run_job(job_id) == "succeeded"
    assert len(llm.calls) == 5  # no finished step ran again
    with db.session() as s:
        assert repo.job_usage(s, job_id)["calls"] == 5


# ---- the API ------------------------------------------------------------------------------


@pytest.fixture
def settings(tmp_path, fake_llm):
    return Settings(longform_data_dir=str(tmp_path), database_url=sqlite_url(tmp_path), llm_endpoints=fake_llm.base_url)


@pytest.fixture
def api(settings):
    with running_api(settings) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield client


def test_the_api_shows_use_against_the_cap_and_retry_takes_new_caps(api):
    response = api.post("/v1/jobs", json={"kind": "steps", "params": {"steps": 3}, "max_calls": 2})
    assert response.status_code == 202, response.text
    assert response.json()["budget"] == {"max_calls": 2, "calls": 0, "max_tokens_total": None, "tokens": 0}
    job = wait_for_job(api, response.json()["id"])
    assert job["status"] == "failed" and "budget of 2 model calls is spent (2 used)" in job["error"]
    assert job["budget"]["max_calls"] == 2 and job["budget"]["calls"] == 2
    assert job["budget"]["tokens"] == job["usage"]["prompt_tokens"] + job["usage"]["completion_tokens"] > 0

    bad = api.post(f"/v1/jobs/{job['id']}/retry", json={"max_calls": -1})
    assert bad.status_code == 422 and "max_calls" in bad.json()["detail"]
    retried = api.post(f"/v1/jobs/{job['id']}/retry", json={"max_calls": 3, "max_tokens_total": 0})
    assert retried.status_code == 202, retried.text
    job = wait_for_job(api, job["id"])
    assert job["status"] == "succeeded", job
    assert job["budget"]["max_calls"] == 3 and job["budget"]["calls"] == 3 and job["budget"]["max_tokens_total"] is None
    listing = api.get("/v1/jobs").json()["items"]
    assert listing[0]["budget"]["calls"] == 3


@pytest.mark.parametrize("field", ["max_calls", "max_tokens_total"])
@pytest.mark.parametrize("value", [-1, 2.5, "3", True, 2**31])
def test_bad_caps_are_a_422_naming_the_field_and_store_nothing(api, settings, field, value):
    response = api.post("/v1/jobs", json={"kind": "steps", "params": {"steps": 1}, field: value})
    assert response.status_code == 422 and field in response.json()["detail"], response.text
    response = api.post("/v1/datasets", json={"items": [{"instruction": "Write a poem."}], field: value})
    assert response.status_code == 422 and field in response.json()["detail"], response.text
    with Database(settings.database_url).session() as s:
        assert s.query(Job).count() == 0


def test_caps_default_to_the_settings_and_zero_means_unlimited(tmp_path, fake_llm):
    settings = Settings(longform_data_dir=str(tmp_path), database_url=sqlite_url(tmp_path),
                        llm_endpoints=fake_llm.base_url, job_max_calls=7, job_max_tokens_total=5000,
                        longform_no_worker=True)
    with running_api(settings) as url, httpx.Client(base_url=url, timeout=30) as api:
        default = api.post("/v1/jobs", json={"kind": "steps", "params": {}}).json()["budget"]
        assert (default["max_calls"], default["max_tokens_total"]) == (7, 5000)
        unlimited = api.post("/v1/jobs", json={"kind": "steps", "params": {}, "max_calls": 0,
                                               "max_tokens_total": 0}).json()["budget"]
        assert (unlimited["max_calls"], unlimited["max_tokens_total"]) == (None, None)
        build = api.post("/v1/datasets", json={"items": [{"instruction": "Write a poem."}], "max_calls": 4})
        assert build.status_code == 202, build.text
        assert build.json()["budget"]["max_calls"] == 4 and build.json()["budget"]["max_tokens_total"] == 5000


async def test_the_children_of_a_build_inherit_its_caps_each_for_itself(tmp_path):
    url = sqlite_url(tmp_path)
    db = Database(url)
    runtime = WorkerRuntime(Settings(database_url=url, longform_data_dir=str(tmp_path)), llm=CountingLLM(), judge=None)
    with db.session() as s:
        parent_id = repo.create_job(s, "steps", {"steps": 1}, max_calls=4, max_tokens_total=900)[0].id
    ids = await runtime.services.spawn_children(parent_id, "steps", [{"steps": 1}, {"steps": 2}], priority=5)
    with db.session() as s:
        assert [(repo.get_job(s, i).max_calls, repo.get_job(s, i).max_tokens_total) for i in ids] == [(4, 900)] * 2


def test_the_cli_submits_and_retries_with_caps(api, monkeypatch, tmp_path):
    from click.testing import CliRunner

    from api.cli import cli

    monkeypatch.delenv("LONGFORM_API_KEY", raising=False)
    env = {"LONGFORM_URL": str(api.base_url), "LONGFORM_DATA_DIR": str(tmp_path / "cli")}
    submitted = CliRunner().invoke(cli, ["submit", "steps", "-p", "steps=3", "--max-calls", "1", "--wait"], env=env)
    job_id = submitted.stdout.split("\n", 1)[0]
    job = api.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "failed" and job["budget"]["max_calls"] == 1 and job["budget"]["calls"] == 1
    retried = CliRunner().invoke(cli, ["retry", job_id, "--max-calls", "0"], env=env)
    assert retried.exit_code == 0, retried.output
    assert wait_for_job(api, job_id)["status"] == "succeeded"
    bad = CliRunner().invoke(cli, ["submit", "steps", "--max-calls", "-1"], env=env)
    assert bad.exit_code == 2 and "--max-calls" in bad.output
