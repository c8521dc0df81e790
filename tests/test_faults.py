"""A few scenarios of the fault campaign (bench/faults.py runs them all): under each fault no
job is lost, no succeeded step runs again, no failure text is stored as output, and a job
that fails says why. Real processes (`longform serve`, Celery workers, the fake server; a
private Redis and PostgreSQL that the scenario may restart); never the real model."""
from __future__ import annotations

import contextlib

import pytest

from bench import faults
from bench.fault_checks import failure_texts, result_problems, rerun_steps, StepMark

pytestmark = pytest.mark.slow


@pytest.fixture
def campaign():  # its own private PostgreSQL and Redis (started on first use) per test
    with contextlib.ExitStack() as exit_stack:
        yield faults.Campaign(exit_stack)


def assert_nothing_lost(outcome: faults.Outcome) -> None:
    audit = outcome.audit
    assert audit.jobs > 0
    assert not audit.lost, audit.summary()
    assert not audit.rerun_steps, audit.rerun_steps
    assert not audit.stored_failures, audit.stored_failures


@pytest.mark.parametrize("name", ["error-storm", "malformed-json"])
def test_model_faults_lose_nothing(name, campaign):
    assert_nothing_lost(faults.SCENARIOS[name](campaign))


def test_a_killed_serve_resumes_every_job_without_calling_the_model_again(campaign):
    outcome = faults.serve_sigkill(campaign)
    assert_nothing_lost(outcome)
    assert outcome.audit.outcomes == {"succeeded": outcome.audit.jobs + outcome.audit.children}
    # every model request after the restart belongs to a step that had not succeeded before
    assert outcome.extra["extra_requests"] == 0


def test_a_killed_model_process_is_restarted_and_its_jobs_finish(campaign):
    outcome = faults.model_process_sigkill(campaign)
    assert_nothing_lost(outcome)
    assert outcome.extra["model_restarts"] >= 1


@pytest.mark.postgres
@pytest.mark.redis
def test_a_redis_restart_loses_no_queued_job(campaign):
    # Without persistence the restarted Redis has lost the queued jobs' messages: the workers
    # notice (its run_id changed) and send the queued jobs again.
    assert_nothing_lost(faults.redis_restart(campaign))


@pytest.mark.postgres
@pytest.mark.redis
def test_a_postgres_restart_loses_no_queued_job(campaign):
    # Tasks that found the database down ended in an error with their message acked; the
    # workers send the jobs still queued again.
    assert_nothing_lost(faults.postgres_restart(campaign))


# -- the checks themselves ---------------------------------------------------------------------


def test_the_checks_find_failure_text_and_broken_json():
    assert failure_texts({"text": "Fine prose."}) == []
    assert failure_texts({"a": ["Internal server error (injected fault)"]})
    assert failure_texts("{'title': 'x'}")  # single quotes: not JSON
    assert failure_texts('{"title": "x", "main_point": ')  # cut
    assert failure_texts("Sure! Here is the JSON you asked for:\n```json\n{}\n```")
    assert result_problems("write", {"text": "It ends in the middle of", "plan": []})
    assert result_problems("write", {"text": "Done.", "plan": '{"broken'})
    assert not result_problems("write", {"text": "Done.", "plan": [{"title": "t"}], "sections": [{"words": 1}]})
    assert result_problems("write", {"text": "Done.", "plan": [], "sections": [{"words": 0}]})


def test_a_step_executed_again_counts_as_rerun():
    from datetime import datetime

    first = {("j", "plan"): StepMark(1, datetime(2026, 1, 1), 1), ("j", "section/1"): StepMark(1, datetime(2026, 1, 1), 2)}
    same = dict(first)
    again = {**first, ("j", "section/1"): StepMark(2, datetime(2026, 1, 2), 2)}
    assert rerun_steps(first, same) == []
    assert rerun_steps(first, again) == ["j:section/1"]
    assert rerun_steps(first, {("j", "plan"): first[("j", "plan")]}) == ["j:section/1"]
