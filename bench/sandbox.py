"""Code sandbox overhead: how long a trivial run (`pass`) takes from the call of
sandbox.run_python to its result, sequentially, and 20 runs at once.

A trivial run does nothing, so its whole time is the sandbox's overhead: a private work
directory, a pids cgroup and the moves into it, the rlimits, bwrap's namespaces and mounts,
the sandbox's Python starting and exiting, the clean-up. For scale the same interpreter started
bare (no sandbox, no limits) is timed too. Then 20 runs start together, each with a little
work (a sum and sympy's isprime), and must all succeed with the right output.
Goal on a 2-core machine: p50 <= 50 ms, and 20 of 20 concurrent runs ok.
Last line: {"p50_ms": ..., "p95_ms": ..., "concurrent_ok": ...}

Run: .venv/bin/python bench/sandbox.py [--runs 200] [--concurrent 20] [--mode bwrap|unsafe]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sandbox import SandboxConfig, SandboxLimits, check_available, run_python  # noqa: E402
from sandbox.runner import _resolve  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def bare_interpreter_ms(config: SandboxConfig, runs: int) -> float | None:
    """p50 of the sandbox's interpreter started directly, for scale."""
    plan = _resolve(config)
    if plan.python_dir is None:
        return None
    python = str(plan.python_dir / "bin" / "python3")
    env = {"PATH": "/usr/bin:/bin", "LD_LIBRARY_PATH": str(plan.python_dir / "lib")}
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([python, "-I", "-u", "-B", "-X", "utf8", "-c", "pass"], env=env, check=True)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


async def main(runs: int, concurrent: int, mode: str) -> dict:
    config = SandboxConfig(mode=mode)
    status = await check_available(config)
    print(f"sandbox: mode {status.mode}, available {status.available}: {status.reason}")
    for key, value in status.details.items():
        print(f"  {key}: {value}")
    if not status.available:
        raise SystemExit(1)
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores")
    limits = SandboxLimits()
    for _ in range(5):  # warm the page cache and the resolved plan
        await run_python("pass", limits, config=config)

    totals, inside = [], []
    for _ in range(runs):
        started = time.perf_counter()
        result = await run_python("pass", limits, config=config)
        totals.append((time.perf_counter() - started) * 1000)
        inside.append(result.wall_ms)
        assert result.ok, result
    p50, p95 = percentile(totals, 0.5), percentile(totals, 0.95)
    print(f"trivial run, {runs} in a row: p50 {p50:.1f} ms, p95 {p95:.1f} ms, min {min(totals):.1f} ms "
          f"(of which spawn to exit: p50 {percentile(inside, 0.5):.1f} ms)")
    bare = bare_interpreter_ms(config, 30)
    if bare is not None:
        print(f"the same interpreter started bare: p50 {bare:.1f} ms")

    code = "import sympy\nprint(sum(range(10**6)), sympy.isprime(2**31 - 1))"
    expected = f"{sum(range(10**6))} True\n"
    started = time.perf_counter()
    results = await asyncio.gather(*(run_python(code, limits, config=config) for _ in range(concurrent)),
                                   return_exceptions=True)
    batch_s = time.perf_counter() - started
    ok = sum(1 for r in results if not isinstance(r, BaseException) and r.ok and r.stdout == expected)
    for r in results:
        if isinstance(r, BaseException) or not r.ok or r.stdout != expected:
            print(f"  failed: {r!r}"[:600])
    print(f"{concurrent} concurrent runs (import sympy, a sum): {ok} ok in {batch_s:.2f} s, "
          f"slowest {max(r.wall_ms for r in results if not isinstance(r, BaseException)):.0f} ms")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return {"p50_ms": round(p50, 1), "p95_ms": round(p95, 1), "concurrent_ok": ok}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--concurrent", type=int, default=20)
    parser.add_argument("--mode", choices=("bwrap", "unsafe"), default="bwrap")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.runs, args.concurrent, args.mode))))
