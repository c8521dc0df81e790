"""Your prompts or ours: PROMPTS_DIR and named prompt sets (PROMPT_SETS_DIR/NAME) overlay the
bundled templates by name; the step fingerprint and the job record which text ran.

The API tests use the fingerprint test kind (tests/fingerprint_kind.py), whose templates are
served as fptest/...; an overlay replaces them by the same relative name.
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from pathlib import Path

import httpx
import jinja2
import pytest
from click.testing import CliRunner

import prompts
from agents.context import JobContext, MemoryStepStore
from agents.llm.types import LLMResult
from agents.settings import Settings
from api.cli import cli
from db import repo
from db.models import Job
from db.session import Database
from tests.api_server import running_api, wait_for_job
from tests.db_fixtures import sqlite_url
from tests.kinds_fixture import register_kind

FP_TEMPLATES = Path(__file__).parent / "fingerprint_templates"
CHUNK_VARS = dict(text="THE CHUNK", index=1, total=3, bound="at most", words=120)


@pytest.fixture(autouse=True)
def clean(monkeypatch):
    for name in ("PROMPTS_DIR", "PROMPT_SETS_DIR", "LONGFORM_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    yield
    prompts._environment.cache_clear()
    prompts._hashes.clear()


def write(path: Path, text: str) -> Path:
    """Write a file with a modification time distinct from any earlier one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    existed = path.exists()
    path.write_text(text)
    if existed:
        later = time.time() + 2
        os.utime(path, (later, later))
    return path


@pytest.fixture
def dirs(tmp_path):
    """An empty PROMPTS_DIR and a sets directory with an empty set `paper`."""
    overlay, sets = tmp_path / "prompts", tmp_path / "sets"
    (sets / "paper").mkdir(parents=True)
    overlay.mkdir()
    return overlay, sets


class _EchoLLM:
    model_name, context_window = "echo", 4096

    async def chat(self, messages, options=None):
        return LLMResult(text="ok", prompt_tokens=1, completion_tokens=1, latency_s=0.0, finish_reason="stop", model="echo")


# ---- rendering -------------------------------------------------------------------------------


def test_an_overlay_file_replaces_the_bundled_template_of_the_same_name(dirs):
    overlay_dir, sets = dirs
    bundled = prompts.render("summarize/chunk.j2", **CHUNK_VARS)
    assert bundled.origin == "bundled"
    write(overlay_dir / "summarize/chunk.j2", "Summarize part {{ index }}: {{ text }}")
    overlay = prompts.make_overlay(str(overlay_dir), str(sets))
    rendered = prompts.render("summarize/chunk.j2", overlay=overlay, **CHUNK_VARS)
    assert rendered.text == "Summarize part 1: THE CHUNK"
    assert rendered.origin == "PROMPTS_DIR" and rendered.origins == {"summarize/chunk.j2": "PROMPTS_DIR"}
    assert rendered.template_hash != bundled.template_hash
    # The bundled templates are unchanged for a render without the overlay.
    assert prompts.render("summarize/chunk.j2", **CHUNK_VARS).text == bundled.text


def test_a_prompt_set_wins_over_prompts_dir_and_partials_are_overlaid_too(dirs):
    overlay_dir, sets = dirs
    write(overlay_dir / "summarize/chunk.j2", "FROM PROMPTS_DIR {{ text }}")
    write(overlay_dir / "summarize/_guidelines.j2", "GUIDELINES FROM PROMPTS_DIR")
    write(sets / "paper/summarize/chunk.j2", 'FROM THE SET {{ text }} {% include "summarize/_guidelines.j2" %}')
    overlay = prompts.make_overlay(str(overlay_dir), str(sets), "paper")
    rendered = prompts.render("summarize/chunk.j2", overlay=overlay, **CHUNK_VARS)
    assert rendered.text == "FROM THE SET THE CHUNK GUIDELINES FROM PROMPTS_DIR"
    assert rendered.origins == {"summarize/chunk.j2": "set:paper", "summarize/_guidelines.j2": "PROMPTS_DIR"}
    # A bundled template that includes an overlaid partial picks it up.
    merged = prompts.render("summarize/merge.j2", overlay=overlay, context="", summaries=["a"], bound="about", words=50)
    assert "GUIDELINES FROM PROMPTS_DIR" in merged.text
    assert merged.origin == "bundled" and merged.origins["summarize/_guidelines.j2"] == "PROMPTS_DIR"


def test_plain_text_templates_are_looked_up_the_same_way(dirs):
    overlay_dir, sets = dirs
    write(sets / "paper/reference/prompt.txt", "Reference prompt for $INST$.")
    overlay = prompts.make_overlay(str(overlay_dir), str(sets), "paper")
    rendered = prompts.render_text("reference/prompt.txt", lambda text: text.replace("$INST$", "a story"), overlay=overlay)
    assert rendered.text == "Reference prompt for a story." and rendered.origin == "set:paper"
    with pytest.raises(jinja2.TemplateNotFound):
        prompts.render_text("reference/prompt.txt", lambda text: text)  # not bundled


def test_hashes_and_texts_follow_overlay_files_as_they_appear_change_and_go(dirs):
    overlay_dir, sets = dirs
    overlay = prompts.make_overlay(str(overlay_dir), str(sets))
    name = "summarize/chunk.j2"
    bundled_hash = prompts.template_hash(name, overlay)
    assert bundled_hash == prompts.template_hash(name)

    path = write(overlay_dir / name, "one {{ text }}")
    first = prompts.template_hash(name, overlay)
    assert first != bundled_hash and prompts.render(name, overlay=overlay, **CHUNK_VARS).text == "one THE CHUNK"

    write(path, "two {{ text }}")
    assert prompts.template_hash(name, overlay) not in (first, bundled_hash)
    assert prompts.render(name, overlay=overlay, **CHUNK_VARS).text == "two THE CHUNK"

    path.unlink()
    assert prompts.template_hash(name, overlay) == bundled_hash
    assert prompts.render(name, overlay=overlay, **CHUNK_VARS).origin == "bundled"


def test_the_step_fingerprint_and_the_context_record_the_overlay(dirs):
    overlay_dir, sets = dirs
    write(sets / "paper/summarize/chunk.j2", "SET {{ text }}")
    settings = Settings(prompts_dir=str(overlay_dir), prompt_sets_dir=str(sets))
    store = MemoryStepStore()
    ctx = JobContext(_EchoLLM(), store=store, settings=settings, prompt_set="paper")

    async def step():
        prompt = ctx.render("summarize/chunk.j2", **CHUNK_VARS)
        return (await ctx.llm.chat([{"role": "user", "content": prompt}])).text

    asyncio.run(ctx.step("chunk/0", step))
    fingerprint = store.usage["chunk/0"].fingerprint()
    assert fingerprint["origins"] == {"summarize/chunk.j2": "set:paper"}
    assert fingerprint["templates"]["summarize/chunk.j2"] == prompts.source_hashes(
        "summarize/chunk.j2", settings.prompt_overlay("paper"))["summarize/chunk.j2"]
    assert prompts.source_origins("summarize/chunk.j2", ctx.prompt_overlay)["summarize/chunk.j2"] == "set:paper"
    # Without an overlay, a fingerprint has no origins part (bundled-only fingerprints are as before).
    plain_ctx = JobContext(_EchoLLM(), store=(plain_store := MemoryStepStore()), settings=Settings(prompt_sets_dir=str(sets)))
    asyncio.run(plain_ctx.step("x", lambda: asyncio.sleep(0, plain_ctx.render("summarize/chunk.j2", **CHUNK_VARS))))
    assert "origins" not in plain_store.usage["x"].fingerprint()


# ---- path safety -----------------------------------------------------------------------------


def test_names_never_leave_their_directory(dirs, tmp_path):
    overlay_dir, sets = dirs
    write(tmp_path / "secret.j2", "SECRET")
    write(sets / "secret.j2", "SECRET")
    overlay = prompts.make_overlay(str(overlay_dir), str(sets), "paper")
    for name in ("../secret.j2", "summarize/../../secret.j2", "../sets/secret.j2"):
        with pytest.raises(jinja2.TemplateNotFound):
            prompts.render(name, overlay=overlay)
    # An absolute name is a relative one inside the directory, never the file system's root.
    with pytest.raises(jinja2.TemplateNotFound):
        prompts.render(str(tmp_path / "secret.j2"), overlay=overlay)


@pytest.mark.parametrize("name", ["..", ".", "../paper", "paper/..", "a/b", ".hidden", "", "x" * 101, "secret.j2", "missing"])
def test_set_names_are_one_installed_directory(dirs, name):
    overlay_dir, sets = dirs
    (sets / ".hidden").mkdir()
    write(sets / "secret.j2", "not a set")
    with pytest.raises(prompts.UnknownPromptSet) as refused:
        prompts.make_overlay(str(overlay_dir), str(sets), name)
    assert "available prompt sets: paper" in str(refused.value)
    assert prompts.prompt_sets(str(sets)) == ["paper"]


def test_settings_default_the_sets_directory_under_the_data_directory(tmp_path, monkeypatch):
    settings = Settings(longform_data_dir=str(tmp_path))
    assert settings.prompt_sets_dir == str(tmp_path.resolve() / "prompt-sets") and settings.prompts_dir == ""
    assert settings.prompt_overlay() is None
    monkeypatch.setenv("PROMPTS_DIR", str(tmp_path / "mine"))
    monkeypatch.setenv("PROMPT_SETS_DIR", str(tmp_path / "sets"))
    loaded = Settings.load()
    assert loaded.prompts_dir == str(tmp_path / "mine") and loaded.prompt_sets_dir == str(tmp_path / "sets")
    assert loaded.sources["prompts_dir"] == "env PROMPTS_DIR"


# ---- the API -----------------------------------------------------------------------------------


@pytest.fixture
def fp_templates(tmp_path, monkeypatch):
    directory = tmp_path / "templates"
    shutil.copytree(FP_TEMPLATES, directory)
    monkeypatch.setattr(prompts, "_extra_dirs", {})
    prompts.register_template_dir("fptest", directory)
    return directory


@pytest.fixture
def api(tmp_path, fake_llm, fp_templates, dirs, monkeypatch):
    register_kind(monkeypatch, "fingerprint-test", "tests.fingerprint_kind:KIND")
    overlay_dir, sets = dirs
    settings = Settings(longform_data_dir=str(tmp_path), database_url=sqlite_url(tmp_path),
                        llm_endpoints=fake_llm.base_url, llm_max_retries=0,
                        prompts_dir=str(overlay_dir), prompt_sets_dir=str(sets))
    with running_api(settings) as url, httpx.Client(base_url=url, timeout=30) as client:
        client.settings = settings
        yield client


def job_count(settings) -> int:
    with Database(settings.database_url).session() as session:
        return session.query(Job).count()


def test_an_unknown_prompt_set_is_refused_at_submit_and_nothing_is_stored(api):
    for body in ({"kind": "chat", "params": {"messages": [{"role": "user", "content": "hi"}]}, "prompt_set": "nope"},
                 {"kind": "chat", "params": {"messages": [{"role": "user", "content": "hi"}]}, "prompt_set": "../paper"}):
        refused = api.post("/v1/jobs", json=body)
        assert refused.status_code == 422, refused.text
        assert "available prompt sets: paper" in refused.json()["detail"]
    refused = api.post("/v1/datasets", json={"items": [{"instruction": "x"}], "prompt_set": "nope"})
    assert refused.status_code == 422 and "unknown prompt set 'nope'" in refused.json()["detail"]
    assert job_count(api.settings) == 0


def test_a_job_renders_from_its_set_and_records_it(api, dirs, fake_llm):
    _overlay_dir, sets = dirs
    write(sets / "paper/fptest/plain.j2", "SET PROMPT: {{ words }} words on {{ topic }}.")
    created = api.post("/v1/jobs", json={"kind": "fingerprint-test", "params": {}, "prompt_set": "paper"})
    assert created.status_code == 202 and created.json()["prompt_set"] == "paper"
    job = wait_for_job(api, created.json()["id"])
    assert job["status"] == "succeeded" and job["prompt_set"] == "paper"
    asked = [r.get("prompt") or "" for r in fake_llm.requests() if r["path"].endswith("/chat/completions")]
    assert any("SET PROMPT: 20 words on rivers." in prompt for prompt in asked), asked
    with Database(api.settings.database_url).reading() as session:
        stored = {key: fp for key, fp, _s, _f in repo.stored_steps(session, job["id"])}
    assert stored["one"]["origins"] == {"fptest/plain.j2": "set:paper"}
    assert "origins" not in stored["two"]  # with_partial.j2 and _part.j2: bundled
    # The same idempotency key with another prompt set is another request.
    key = {"Idempotency-Key": "k1"}
    assert api.post("/v1/jobs", json={"kind": "fingerprint-test", "params": {}}, headers=key).status_code == 202
    assert api.post("/v1/jobs", json={"kind": "fingerprint-test", "params": {}, "prompt_set": "paper"},
                    headers=key).status_code == 409


def test_a_changed_overlay_file_makes_its_steps_stale_for_a_retry(api, dirs, tmp_path):
    overlay_dir, _sets = dirs
    part = write(overlay_dir / "fptest/_part.j2", "Overlaid partial.")
    marker = write(tmp_path / "crash", "")
    job_id = api.post("/v1/jobs", json={"kind": "fingerprint-test", "params": {"fail_if_exists": str(marker)}}).json()["id"]
    assert wait_for_job(api, job_id)["status"] == "failed"
    marker.unlink()
    write(part, "The overlaid partial, changed.")
    refused = api.post(f"/v1/jobs/{job_id}/retry")
    assert refused.status_code == 409, refused.text
    assert refused.json()["detail"]["stale_steps"] == [{"key": "two", "changed": ["template fptest/_part.j2 changed"]}]
    assert api.post(f"/v1/jobs/{job_id}/retry", json={"mode": "fresh"}).status_code == 202
    assert wait_for_job(api, job_id)["status"] == "succeeded"


def test_children_of_a_job_inherit_its_prompt_set(tmp_path, dirs):
    from workers.job_services import DbJobServices

    _overlay_dir, sets = dirs
    settings = Settings(longform_data_dir=str(tmp_path), database_url=sqlite_url(tmp_path), prompt_sets_dir=str(sets))
    db = Database(settings.database_url)
    with db.session() as session:
        parent, _ = repo.create_job(session, "dataset", {"items": []}, prompt_set="paper")
        parent_id = parent.id
    services = DbJobServices(db, settings, lambda job_id, priority: None)
    params = {"messages": [{"role": "user", "content": "hi"}]}
    child_ids = asyncio.run(services.spawn_children(parent_id, "chat", [params, params], priority=5))
    with db.reading() as session:
        assert [repo.get_job(session, i).prompt_set for i in child_ids] == ["paper", "paper"]


def test_the_prompts_endpoint_lists_origins_without_server_paths(api, dirs, tmp_path):
    overlay_dir, sets = dirs
    write(overlay_dir / "summarize/chunk.j2", "{{ text }")  # a syntax error
    write(overlay_dir / "sumarize/merge.j2", "typo")
    write(sets / "paper/summarize/update.j2", "{{ summary }} {{ text }}")
    body = api.get("/v1/prompts").json()
    assert body["prompt_sets"] == ["paper"] and body["prompts_dir"] is True
    items = {item["name"]: item for item in body["items"]}
    assert items["summarize/chunk.j2"]["origin"] == "PROMPTS_DIR" and items["summarize/chunk.j2"]["problem"]
    assert items["sumarize/merge.j2"]["note"] == "unused"
    assert items["summarize/update.j2"]["origin"] == "bundled"
    with_set = {i["name"]: i["origin"] for i in api.get("/v1/prompts", params={"prompt_set": "paper"}).json()["items"]}
    assert with_set["summarize/update.j2"] == "set:paper"
    assert str(tmp_path) not in json.dumps(body) and str(prompts.TEMPLATE_DIR) not in json.dumps(body)
    assert api.get("/v1/prompts", params={"prompt_set": "nope"}).status_code == 422


# ---- the CLI -----------------------------------------------------------------------------------


def run_cli(args: list[str], dirs, **env):
    overlay_dir, sets = dirs
    env = {"PROMPTS_DIR": str(overlay_dir), "PROMPT_SETS_DIR": str(sets), **env}
    return CliRunner().invoke(cli, args, env=env)


def test_prompts_list_shows_origins_and_flags_unused_files(dirs):
    overlay_dir, sets = dirs
    write(overlay_dir / "summarize/_guidelines.j2", "Mine.")
    write(overlay_dir / "sumarize/chunk.j2", "a typo in the directory name")
    write(sets / "paper/summarize/chunk.j2", "{{ text }}")
    listed = run_cli(["prompts", "list"], dirs)
    assert listed.exit_code == 0, listed.output
    lines = {line.split()[1]: line for line in listed.stdout.splitlines() if line.strip().startswith("│")}
    assert "PROMPTS_DIR" in lines["summarize/_guidelines.j2"]
    assert "includes an overlaid partial" in lines["summarize/merge.j2"]
    assert "unused" in lines["sumarize/chunk.j2"]
    assert "bundled" in lines["summarize/chunk.j2"]

    as_json = json.loads(run_cli(["prompts", "list", "--set", "paper", "--json"], dirs).stdout)
    items = {i["name"]: i for i in as_json["items"]}
    assert items["summarize/chunk.j2"]["origin"] == "set:paper" and as_json["prompt_sets"] == ["paper"]

    unknown = run_cli(["prompts", "list", "--set", "nope"], dirs)
    assert unknown.exit_code == 2 and "unknown prompt set 'nope'" in unknown.output and "paper" in unknown.output


def test_prompts_show_and_diff(dirs):
    _overlay_dir, sets = dirs
    bundled = prompts.template_source("summarize/chunk.j2")
    write(sets / "paper/summarize/chunk.j2", bundled.replace("Summarize", "Condense", 1) + "One more line.\n")

    shown = run_cli(["prompts", "show", "summarize/chunk.j2", "--set", "paper"], dirs)
    assert shown.exit_code == 0 and shown.stdout.endswith("One more line.\n") and "set:paper" in shown.stderr
    assert run_cli(["prompts", "show", "summarize/chunk.j2", "--bundled"], dirs).stdout == bundled

    diff = run_cli(["prompts", "diff", "summarize/chunk.j2", "--set", "paper"], dirs)
    assert diff.exit_code == 0, diff.output
    assert diff.stdout.startswith("--- bundled/summarize/chunk.j2\n+++ set:paper/summarize/chunk.j2\n")
    assert "+One more line.\n" in diff.stdout

    same = run_cli(["prompts", "diff", "summarize/chunk.j2"], dirs)
    assert same.stdout == "summarize/chunk.j2: not overlaid (the bundled text is used)\n"
    missing = run_cli(["prompts", "show", "../secret.j2"], dirs)
    assert missing.exit_code == 1 and "no bundled or overlaid template named" in missing.output
