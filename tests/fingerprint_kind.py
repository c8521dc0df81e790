"""A test kind whose steps use templates with and without a partial, for step fingerprints.

Steps, in order: `one` (plain.j2), `two` (with_partial.j2, which includes _part.j2),
`three` (plain.j2, on the output of `two`), `four` (plain.j2; raises while the file named
by `fail_if_exists` exists, which stands for a crash).
"""
from __future__ import annotations

import os

from pydantic import BaseModel

from agents.context import JobContext
from agents.kinds import JobKind, ResultView
from agents.llm.types import GenOptions

TEMPLATE_PREFIX = "fptest"


class FingerprintParams(BaseModel):
    fail_if_exists: str = ""


class FingerprintResult(BaseModel):
    text: str


async def run(ctx: JobContext, params: FingerprintParams) -> FingerprintResult:
    async def call(template: str, topic: str) -> str:
        prompt = ctx.render(f"{TEMPLATE_PREFIX}/{template}", words=20, topic=topic)
        return (await ctx.llm.chat([{"role": "user", "content": prompt}], GenOptions(max_tokens=60))).text

    one = await ctx.step("one", lambda: call("plain.j2", "rivers"))
    two = await ctx.step("two", lambda: call("with_partial.j2", "bridges"))
    three = await ctx.step("three", lambda: call("plain.j2", two[:40]))

    async def four() -> str:
        if params.fail_if_exists and os.path.exists(params.fail_if_exists):
            raise RuntimeError("simulated crash")
        return await call("plain.j2", "harbours")

    return FingerprintResult(text="\n\n".join([one, two, three, await ctx.step("four", four)]))


KIND = JobKind("fingerprint-test", "test: steps with and without a partial template", FingerprintParams,
               FingerprintResult, run, view=ResultView(text="text"))
