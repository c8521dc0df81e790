"""A multi-step agent for job-runner tests: N sequential model calls, each a checkpointed step."""
from __future__ import annotations

from pydantic import BaseModel, Field

from agents.context import JobContext
from agents.kinds import JobKind, ResultView
from agents.llm.types import GenOptions


class StepsResult(BaseModel):
    text: str
    parts: int


class StepsParams(BaseModel):
    steps: int = Field(default=3, ge=1, le=1000)
    words: int = 20
    fail_at: int | None = None  # raise at this step, for failure tests


async def run(ctx: JobContext, params: StepsParams) -> dict:
    texts = []
    for i in range(params.steps):
        async def call(i=i):
            if params.fail_at == i:
                raise RuntimeError(f"boom at step {i}")
            result = await ctx.llm.chat(
                [{"role": "user", "content": f"Step {i} of job {ctx.job_id}. Write about {params.words} words."}],
                GenOptions(max_tokens=200),
            )
            return result.text
        texts.append(await ctx.step(f"part/{i}", call))
        await ctx.progress(i + 1, params.steps)
    return {"text": "\n\n".join(texts), "parts": len(texts)}


KIND = JobKind("steps", "test: N sequential model calls", StepsParams, StepsResult, run, view=ResultView(text="text"))


class FanoutParams(BaseModel):
    children: int = Field(default=2, ge=1, le=50)


async def run_fanout(ctx: JobContext, params: FanoutParams) -> dict:
    """A parent job: `children` one-step `steps` jobs, then waits for them (as dataset builds do)."""
    await ctx.step("spawn", lambda: ctx.spawn_children("steps", [{"steps": 1}] * params.children, priority=7))
    counts = await ctx.wait_children()
    return {"text": f"{counts.get('succeeded', 0)} of {params.children} children succeeded", "parts": params.children}


FANOUT = JobKind("fanout", "test: a parent of N child jobs", FanoutParams, StepsResult, run_fanout,
                 view=ResultView(text="text"))
