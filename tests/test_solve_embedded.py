"""`solve` with `method: code` on the real embedded model (marker `model`): the model writes a
program, the program runs in the bubblewrap sandbox, and the transcript records the run."""
from __future__ import annotations

import pytest

from agents import solve
from agents.context import JobContext, MemoryStepStore
from agents.llm.factory import make_llm_client
from agents.settings import Settings

pytestmark = pytest.mark.model


async def test_model_written_code_runs_in_the_sandbox(tmp_path):
    settings = Settings(longform_data_dir=str(tmp_path))
    llm = make_llm_client(settings)
    store = MemoryStepStore()
    try:
        ctx = JobContext(llm, store=store, settings=settings, job_id="solve-embedded")
        result = await solve.run(ctx, solve.SolveParams(
            question="What is 123456789 * 987654321? Print the product.", method="code", seed=1))
    finally:
        await llm.aclose()
    solve.KIND.validate_result(result)
    [turn] = result["turns"]
    assert turn["code"], "the model's reply held no code block"
    runs = [key for key in store.outputs if key.startswith("run/")]
    assert runs, "no code run step"
    run = store.outputs[runs[0]]
    # The code really ran, in the sandbox (whatever its output: a 135M model's code may fail).
    assert run["sandbox"] == "bwrap" and run["wall_ms"] > 0
    assert run["exit_code"] is not None or run["timed_out"] or run["signal"] is not None
    assert result["usage"]["code_runs"] == len(runs) and result["usage"]["model_calls"] >= 1
