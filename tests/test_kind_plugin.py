"""A job kind from another package: installed (a wheel, by pip) into a temporary directory,
registered through the `longform.kinds` entry point group, run over REST by a real
`longform serve` with nothing else changed."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import httpx

from tests.api_server import wait_for_job
from tests.db_fixtures import sqlite_url
from tests.processes import start_serve

PLUGIN_CODE = textwrap.dedent('''
    """An outside kind: asks the model once and shouts the answer."""
    from pydantic import BaseModel, Field

    from agents.kinds import JobKind, ResultView, Score
    from agents.llm.types import GenOptions


    class ShoutParams(BaseModel):
        topic: str = Field(min_length=1)


    class ShoutResult(BaseModel):
        shout: str
        letters: int


    async def run(ctx, params):
        async def ask():
            reply = await ctx.llm.chat([{"role": "user", "content": f"Say something about {params.topic}."}],
                                       GenOptions(max_tokens=40))
            return reply.text
        text = await ctx.step("ask", ask)
        return ShoutResult(shout=text.upper(), letters=sum(c.isalpha() for c in text))


    KIND = JobKind("shout", "an outside kind that shouts", ShoutParams, ShoutResult, run,
                   view=ResultView(text="shout"), scores=lambda r: [Score("letters", float(r.letters))])
''')


def build_wheel(directory: Path) -> Path:
    """A minimal wheel of the package `shout_kind` with its entry point."""
    dist = "shout_kind-0.1.dist-info"
    files = {
        "shout_kind/__init__.py": PLUGIN_CODE,
        f"{dist}/METADATA": "Metadata-Version: 2.1\nName: shout-kind\nVersion: 0.1\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: longform-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{dist}/entry_points.txt": "[longform.kinds]\nshout = shout_kind:KIND\n",
    }
    files[f"{dist}/RECORD"] = "".join(f"{name},,\n" for name in files) + f"{dist}/RECORD,,\n"
    wheel = directory / "shout_kind-0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return wheel


def test_an_installed_package_adds_a_kind_that_runs_over_rest(tmp_path, fake_llm):
    site = tmp_path / "site"
    wheel = build_wheel(tmp_path)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", str(site),
                    str(wheel)], check=True, capture_output=True)
    env = {"DATABASE_URL": sqlite_url(tmp_path), "LLM_ENDPOINTS": fake_llm.base_url,
           "LONGFORM_DATA_DIR": str(tmp_path), "PYTHONPATH": str(site)}
    server, url = start_serve(env, tmp_path)
    try:
        with httpx.Client(base_url=url, timeout=30) as api:
            kinds = {k["kind"]: k for k in api.get("/v1/kinds").json()["items"]}
            assert kinds["shout"]["view"]["text"] == "shout"
            assert set(kinds["shout"]["result_schema"]["properties"]) == {"shout", "letters"}
            assert api.post("/v1/jobs", json={"kind": "shout", "params": {}}).status_code == 422
            job_id = api.post("/v1/jobs", json={"kind": "shout", "params": {"topic": "tides"}}).json()["id"]
            job = wait_for_job(api, job_id)
            assert job["status"] == "succeeded", job
            assert job["result"]["shout"] == job["result"]["shout"].upper() and job["result"]["letters"] > 0
            assert job["scores"] == {"letters": float(job["result"]["letters"])}
    finally:
        server.stop()
