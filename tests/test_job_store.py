"""The job store and runner on SQLite and PostgreSQL: idempotency, claims, leases, checkpoints, cancel, retry."""
import asyncio
import time

import pytest

from agents.settings import Settings
from db import repo
from db.session import Database
from tests.db_fixtures import *  # noqa: F401,F403
from tests.scripted_llm import CountingLLM
from tests.kinds_fixture import register_kind
from workers.runtime import SKIPPED, WorkerRuntime


@pytest.fixture(autouse=True)
def steps_kind(monkeypatch):
    register_kind(monkeypatch, "steps", "tests.step_agent:KIND")


def make_job(db, params=None, **kw):
    with db.session() as s:
        job, _ = repo.create_job(s, "steps", params or {"steps": 3}, **kw)
        return job.id


def runtime_for(url, llm=None, **settings):
    settings = Settings(database_url=url, **settings)
    return WorkerRuntime(settings, llm=llm or CountingLLM(), judge=None)


def test_idempotency_key_returns_the_same_job_and_rejects_a_different_request(database_url):
    db = Database(database_url)
    with db.session() as s:
        first, created = repo.create_job(s, "steps", {"steps": 2}, idempotency_key="k1")
        assert created
    with db.session() as s:
        again, created = repo.create_job(s, "steps", {"steps": 2}, idempotency_key="k1")
        assert not created and again.id == first.id
        with pytest.raises(repo.IdempotencyConflict):
            repo.create_job(s, "steps", {"steps": 5}, idempotency_key="k1")
    with db.session() as s:  # another owner may use the same key
        other, created = repo.create_job(s, "steps", {"steps": 2}, idempotency_key="k1", owner="someone")
        assert created and other.id != first.id


def test_a_job_is_claimed_once_and_taken_over_after_its_lease_runs_out(database_url):
    db = Database(database_url)
    job_id = make_job(db)
    with db.session() as s:
        assert repo.claim_job(s, job_id, "w1", lease_s=60) is not None
    with db.session() as s:
        assert repo.claim_job(s, job_id, "w2", lease_s=60) is None  # w1 holds a fresh lease
    time.sleep(0.3)
    with db.session() as s:
        assert repo.claim_job(s, job_id, "w2", lease_s=0.1) is not None  # w1 stopped heartbeating
    with db.session() as s:
        job = repo.get_job(s, job_id)
        assert job.worker == "w2" and job.runs == 2
    with db.session() as s:
        assert repo.heartbeat(s, "w1", [job_id]) == {job_id}  # w1 lost the job: it must stop
        assert repo.heartbeat(s, "w2", [job_id]) == set()


def test_queue_order_is_priority_then_age(database_url):
    db = Database(database_url)
    low = make_job(db, priority=9)
    high = make_job(db, priority=0)
    mid = make_job(db, priority=5)
    with db.session() as s:
        assert repo.runnable_job_ids(s, 60, 10) == [high, mid, low]


async def test_runner_checkpoints_every_step_and_replays_without_calling_the_model(database_url):
    db = Database(database_url)
    llm = CountingLLM()
    runtime = runtime_for(database_url, llm)
    job_id = make_job(db, {"steps": 4})
    assert await runtime.run_job(job_id) == "succeeded"
    assert len(llm.calls) == 4
    with db.session() as s:
        job = repo.get_job(s, job_id)
        assert job.status == "succeeded" and job.result["parts"] == 4 and job.progress == 1.0
        steps = repo.list_steps(s, job_id)
        assert [st.key for st in steps] == [f"part/{i}" for i in range(4)]
        assert all(st.status == "succeeded" and st.calls == 1 and st.prompt_tokens == 10 for st in steps)
        assert repo.job_usage(s, job_id)["completion_tokens"] == 12
        repo.requeue_for_retry(s, job)  # run it again: every step comes from its checkpoint
    assert await runtime.run_job(job_id) == "succeeded"
    assert len(llm.calls) == 4


async def test_a_failed_job_keeps_its_finished_steps_and_retry_resumes(database_url):
    db = Database(database_url)
    llm = CountingLLM()
    runtime = runtime_for(database_url, llm)
    job_id = make_job(db, {"steps": 4, "fail_at": 2})
    assert await runtime.run_job(job_id) == "failed"
    with db.session() as s:
        job = repo.get_job(s, job_id)
        assert "boom at step 2" in job.error
        assert repo.succeeded_steps(s, job_id).keys() == {"part/0", "part/1"}
        failed = [st for st in repo.list_steps(s, job_id) if st.status == "failed"]
        assert [st.key for st in failed] == ["part/2"]
        job.params = {"steps": 4}  # the cause is fixed
        repo.requeue_for_retry(s, job)
    assert await runtime.run_job(job_id) == "succeeded"
    assert len(llm.calls) == 4  # parts 0 and 1 were not called again


async def test_cancel_stops_a_running_job_and_keeps_finished_steps(database_url):
    db = Database(database_url)
    llm = CountingLLM(delay_s=0.2)
    runtime = runtime_for(database_url, llm, job_lease_seconds=0.8)
    job_id = make_job(db, {"steps": 50})
    task = asyncio.create_task(runtime.run_job(job_id))
    await asyncio.sleep(0.7)
    with db.session() as s:
        repo.request_cancel(s, repo.get_job(s, job_id))
    assert await asyncio.wait_for(task, 10) == "cancelled"
    with db.session() as s:
        job = repo.get_job(s, job_id)
        done = repo.succeeded_steps(s, job_id)
        assert job.status == "cancelled" and 1 <= len(done) < 50
    assert len(llm.calls) <= len(done) + 1  # no new steps after the cancel was seen


async def test_a_second_delivery_of_a_running_job_is_skipped(database_url):
    db = Database(database_url)
    runtime = runtime_for(database_url, CountingLLM(delay_s=0.1))
    job_id = make_job(db, {"steps": 5})
    first = asyncio.create_task(runtime.run_job(job_id))
    for _ in range(200):  # until the first delivery holds the job
        await asyncio.sleep(0.02)
        with db.session() as s:
            if repo.get_job(s, job_id).status == "running":
                break
    assert await runtime_for(database_url).run_job(job_id) == SKIPPED
    assert await first == "succeeded"


async def test_a_time_slice_releases_the_job_for_another_run(database_url):
    db = Database(database_url)
    llm = CountingLLM(delay_s=0.1)
    runtime = runtime_for(database_url, llm)
    job_id = make_job(db, {"steps": 10})
    assert await runtime.run_job(job_id, time_slice_s=0.35) == "released"
    with db.session() as s:
        assert repo.get_job(s, job_id).status == "queued"
    assert await runtime.run_job(job_id) == "succeeded"
    assert len(llm.calls) <= 11  # at most the one step cut by the slice runs twice


def test_events_record_status_changes_in_order(database_url):
    db = Database(database_url)
    job_id = make_job(db)
    with db.session() as s:
        repo.request_cancel(s, repo.get_job(s, job_id))
    with db.session() as s:
        events = repo.events_after(s, job_id, 0)
        assert [e.data["status"] for e in events] == ["queued", "cancelled"]
        assert repo.events_after(s, job_id, events[0].id)[0].data["status"] == "cancelled"


async def test_step_checkpoints_record_attempts_and_outcomes(database_url):
    from agents.context import StepUsage
    from workers.step_store import DbStepStore

    db = Database(database_url)
    job_id = make_job(db)
    store = DbStepStore(db, job_id)
    await store.started("a")
    await store.failed("a", "boom", StepUsage(calls=1, prompt_tokens=7))
    await store.started("a")  # the retry: a second attempt on the same row
    await store.finished("a", {"text": "ok"}, StepUsage(calls=1, completion_tokens=3, model="m"))
    await store.finished("b", [1, 2], StepUsage())  # its running row was never written
    with db.session() as s:
        steps = {step.key: step for step in repo.list_steps(s, job_id)}
    assert (steps["a"].status, steps["a"].attempt, steps["a"].error) == ("succeeded", 2, None)
    assert (steps["a"].output, steps["a"].completion_tokens, steps["a"].model) == ({"text": "ok"}, 3, "m")
    assert (steps["b"].status, steps["b"].output) == ("succeeded", [1, 2])
    assert await store.succeeded() == {"a": {"text": "ok"}, "b": [1, 2]}


@pytest.mark.postgres
def test_a_pooled_connection_closed_by_the_server_is_replaced_before_use(postgres_url, monkeypatch):
    import sqlalchemy as sa

    from db import session as session_module

    db = Database(postgres_url)
    with db.session() as s:
        backend = s.execute(sa.text("SELECT pg_backend_pid()")).scalar()
    with Database(postgres_url.rsplit("/", 1)[0] + "/postgres").session() as s:  # as a restart would
        s.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": backend})
    monkeypatch.setattr(session_module, "IDLE_PING_SECONDS", 0.0)
    with db.session() as s:
        assert s.execute(sa.text("SELECT pg_backend_pid()")).scalar() != backend
    db.execute_autocommit(*repo.step_started(db.engine.dialect.name, make_job(db), "k"))


async def test_concurrent_checkpoints_are_committed_together_and_a_bad_one_fails_alone(database_url):
    from agents.context import StepUsage
    from workers.step_store import DbStepStore

    db = Database(database_url)
    job_id = make_job(db)
    store = DbStepStore(db, job_id)
    orphan = DbStepStore(db, "no-such-job")  # its rows break the foreign key
    writes = [store.finished(f"s{i}", {"i": i}, StepUsage(calls=1)) for i in range(40)]
    outcomes = await asyncio.gather(*writes[:20], orphan.finished("x", 1, StepUsage()), *writes[20:],
                                    return_exceptions=True)
    assert isinstance(outcomes[20], Exception)
    assert [o for k, o in enumerate(outcomes) if k != 20] == [None] * 40
    assert await store.succeeded() == {f"s{i}": {"i": i} for i in range(40)}


async def test_a_cancellation_while_a_finished_step_is_being_saved_keeps_its_output():
    from agents.context import JobContext, MemoryStepStore

    class SlowSave(MemoryStepStore):
        def __init__(self):
            super().__init__()
            self.saving = asyncio.Event()

        async def finished(self, key, output, usage):
            self.saving.set()
            await asyncio.sleep(0.05)  # a database write in flight
            await super().finished(key, output, usage)

    store = SlowSave()
    ctx = JobContext(CountingLLM(), store=store)

    async def work():
        return "the step's output"

    task = asyncio.create_task(ctx.step("only", work))
    await store.saving.wait()
    task.cancel()  # e.g. the worker shutting down, or the job's time slice ending
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.1)
    assert store.outputs == {"only": "the step's output"}  # a resumed job will not run it again


async def test_a_waiting_parent_runs_its_queued_children_in_its_own_slot(database_url, monkeypatch):
    # Every worker slot held by a waiting parent used to mean children that never ran: here the
    # parent's is the only run, so it must run its children itself (each claimed like any job).
    register_kind(monkeypatch, "fanout", "tests.step_agent:FANOUT")
    db = Database(database_url)
    with db.session() as s:
        parent_id = repo.create_job(s, "fanout", {"children": 3})[0].id
    runtime = runtime_for(database_url)
    try:
        assert await asyncio.wait_for(runtime.run_job(parent_id), 60) == "succeeded"
    finally:
        await runtime.aclose()
    with db.reading() as s:
        parent = repo.get_job(s, parent_id)
        children = repo.list_jobs(s, parent_id=parent_id)[0]
        assert parent.result["text"] == "3 of 3 children succeeded"
        assert [c.status for c in children] == ["succeeded"] * 3 and all(c.runs == 1 for c in children)
        # A worker that gets a child's task later skips it: claimed once, run once.
        assert await runtime_for(database_url).run_job(children[0].id) == SKIPPED
