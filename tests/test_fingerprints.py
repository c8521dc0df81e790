"""Step fingerprints: a retry or resume never reuses a step whose prompt changed, silently.

A test kind (tests/fingerprint_kind.py) renders templates from a temporary copy of
tests/fingerprint_templates/, so a test can change a partial between a crash and a retry.
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import httpx
import pytest

import prompts
from agents import fingerprints
from agents.context import JobContext, MemoryStepStore
from agents.llm.types import GenOptions, LLMResult
from agents.settings import Settings
from db import repo
from db.session import Database
from tests.api_server import running_api, wait_for_job
from tests.db_fixtures import sqlite_url
from tests.kinds_fixture import register_kind

TEMPLATES = Path(__file__).parent / "fingerprint_templates"


@pytest.fixture
def templates(tmp_path, monkeypatch):
    """A writable copy of the test kind's templates, served as fptest/..."""
    directory = tmp_path / "templates"
    shutil.copytree(TEMPLATES, directory)
    monkeypatch.setattr(prompts, "_extra_dirs", {})
    prompts.register_template_dir("fptest", directory)
    yield directory
    prompts._environment.cache_clear()
    prompts._hashes.clear()


@pytest.fixture
def api(tmp_path, fake_llm, templates, monkeypatch):
    register_kind(monkeypatch, "fingerprint-test", "tests.fingerprint_kind:KIND")
    settings = Settings(longform_data_dir=str(tmp_path), database_url=sqlite_url(tmp_path),
                        llm_endpoints=fake_llm.base_url, llm_max_retries=0)
    with running_api(settings) as url, httpx.Client(base_url=url, timeout=30) as client:
        client.settings = settings
        yield client


def change(path: Path, text: str) -> None:
    path.write_text(text)
    later = time.time() + 2  # a distinct modification time even on coarse file systems
    os.utime(path, (later, later))


def crashed_job(api, tmp_path) -> str:
    marker = tmp_path / "crash"
    marker.write_text("")
    job_id = api.post("/v1/jobs", json={"kind": "fingerprint-test", "params": {"fail_if_exists": str(marker)}}).json()["id"]
    job = wait_for_job(api, job_id)
    assert job["status"] == "failed" and "simulated crash" in job["error"], job
    marker.unlink()
    return job_id


def chat_requests_since(fake, moment: float) -> int:
    return sum(1 for r in fake.requests() if r["path"].endswith("/chat/completions") and r["time"] >= moment)


def attempts(api, job_id) -> dict[str, int]:
    return {s["key"]: s["attempt"] for s in api.get(f"/v1/jobs/{job_id}/steps").json()["items"]}


def test_a_changed_partial_is_refused_then_fresh_reruns_only_its_steps_and_their_dependents(api, templates, tmp_path, fake_llm):
    job_id = crashed_job(api, tmp_path)
    change(templates / "_part.j2", "Be concise and concrete.\n")

    refused = api.post(f"/v1/jobs/{job_id}/retry")
    assert refused.status_code == 409, refused.text
    detail = refused.json()["detail"]
    assert detail["stale_steps"] == [{"key": "two", "changed": ["template fptest/_part.j2 changed"]}]
    assert "'reuse'" in detail["message"] and "'fresh'" in detail["message"]
    assert api.get(f"/v1/jobs/{job_id}").json()["status"] == "failed"  # nothing changed by the refusal

    before = time.time()
    assert api.post(f"/v1/jobs/{job_id}/retry", json={"mode": "fresh"}).status_code == 202
    job = wait_for_job(api, job_id)
    assert job["status"] == "succeeded", job
    # `one` finished before `two` started: kept. `two` (stale), `three` (started after `two`
    # ended) and `four` (failed) ran again: three model calls, no more.
    assert chat_requests_since(fake_llm, before) == 3
    assert attempts(api, job_id) == {"one": 1, "two": 1, "three": 1, "four": 2}


def test_reuse_keeps_the_stale_step_under_a_new_fingerprint(api, templates, tmp_path, fake_llm):
    job_id = crashed_job(api, tmp_path)
    change(templates / "with_partial.j2", '{% include "fptest/_part.j2" %}\nWrite {{ words }} words about {{ topic }}.\n')
    before = time.time()
    assert api.post(f"/v1/jobs/{job_id}/retry", json={"mode": "reuse"}).status_code == 202
    assert wait_for_job(api, job_id)["status"] == "succeeded"
    assert chat_requests_since(fake_llm, before) == 1  # only the failed step
    with Database(api.settings.database_url).reading() as session:
        stored = {key: fp for key, fp, _s, _f in repo.stored_steps(session, job_id)}
    assert stored["two"]["reused"] is True and stored["two"]["templates"]["fptest/with_partial.j2"] == \
        prompts.source_hashes("fptest/with_partial.j2")["fptest/with_partial.j2"]
    assert api.post(f"/v1/jobs/{job_id}/retry").status_code == 409  # succeeded: nothing to retry


def test_an_automatic_resume_with_stale_steps_fails_the_job_with_the_reason(api, templates, tmp_path):
    job_id = crashed_job(api, tmp_path)
    change(templates / "plain.j2", "Write roughly {{ words }} words on {{ topic }}.\n")
    db = Database(api.settings.database_url)
    with db.session() as session:  # as a start-up sweep or a lease takeover would: no mode
        repo.requeue_for_retry(session, repo.get_job(session, job_id))
    api.post("/v1/jobs", json={"kind": "chat", "params": {"messages": [{"role": "user", "content": "wake"}]}})
    job = wait_for_job(api, job_id)
    assert job["status"] == "failed"
    assert "2 stored steps no longer match the code" in job["error"]
    assert "one (template fptest/plain.j2 changed)" in job["error"]
    assert "three (template fptest/plain.j2 changed)" in job["error"] and "two (" not in job["error"]
    assert "retry with mode 'reuse' or 'fresh'" in job["error"]


def test_steps_stored_before_fingerprints_count_as_matching(api, templates, tmp_path):
    job_id = crashed_job(api, tmp_path)
    change(templates / "_part.j2", "Something else entirely.\n")
    with Database(api.settings.database_url).session() as session:
        repo.restamp_steps(session, job_id, {key: None for key, *_ in repo.stored_steps(session, job_id)})
    assert api.post(f"/v1/jobs/{job_id}/retry").status_code == 202
    assert wait_for_job(api, job_id)["status"] == "succeeded"


def test_a_template_hash_covers_its_partials(templates):
    before = prompts.template_hash("fptest/with_partial.j2"), prompts.template_hash("fptest/plain.j2")
    change(templates / "_part.j2", "Changed.\n")
    after = prompts.template_hash("fptest/with_partial.j2"), prompts.template_hash("fptest/plain.j2")
    assert after[0] != before[0] and after[1] == before[1]
    assert set(prompts.source_hashes("fptest/with_partial.j2")) == {"fptest/with_partial.j2", "fptest/_part.j2"}


class _NamedModel:
    model_name = "base-model"
    context_window = 4096

    async def chat(self, messages, options=None):
        return LLMResult(text="ok", finish_reason="stop", prompt_tokens=3, completion_tokens=1, latency_s=0.0,
                         model=(options.model if options else None) or self.model_name)


async def test_the_client_model_is_compared_and_a_model_named_by_params_is_not():
    store = MemoryStepStore()
    ctx = JobContext(_NamedModel(), store=store)

    async def ask(model=None):
        return (await ctx.llm.chat([{"role": "user", "content": "hi"}], GenOptions(model=model))).text

    await ctx.step("default", ask)
    await ctx.step("named", lambda: ask("lora-adapter"))
    default, named = store.usage["default"].fingerprint(), store.usage["named"].fingerprint()
    assert default["models"] == {"llm": "base-model"} and named["models"] == {}
    assert named["sampling"][0]["model"] == "lora-adapter"  # fixed by the job's params
    assert fingerprints.changes(default, 1, {"llm": "other-model"}) == ["llm model base-model -> other-model"]
    assert fingerprints.changes(named, 1, {"llm": "other-model"}) == []
    assert fingerprints.changes(default, 2) == ["kind version 1 -> 2"]
