"""Benchmark: does the endpoint pool keep a vLLM-like server busy, and split load evenly?

Part 1: one fake vLLM server (continuous batching, max_num_seqs=64, 2 ms per decoded token,
so its decode capacity is 64 / 0.002 = 32,000 tokens/s). 1,000 chat requests of exactly 200
completion tokens go through `OpenAIPool` at once. Achieved generation tokens/s (tokens the
client received / wall time) over the capacity is the utilization; it must be >= 0.90.

Part 2: two fake servers behind one pool, the same load. Imbalance = |a - b| / max(a, b) of
the requests each served; it must be <= 0.10.

The pool's in-flight limit defaults to twice max_num_seqs: like vLLM, the server queues what
it cannot run, so a finished sequence's slot is refilled from its own queue at once instead
of waiting for the client's next request to arrive (the advice for real deployments too).

The requests are submitted by a loop that yields to the event loop after each one, as
requests from many running jobs arrive. Creating all 1,000 tasks before any runs delayed the
first send by about a quarter of a second here (the HTTP stack yields before writing, so
every task's first step runs before any request reaches the socket): a one-off start-up
cost of the submitting code, not of the pool, worth 3-4% of this short run.

Time to first token. The capacity figure assumes every slot decodes all the time. vLLM
prefills a short prompt inside the next scheduler step, alongside the running decodes, so a
new sequence costs its slot about one step; the fake's default TTFT (20 ms, an idle server's
figure) instead holds the slot idle for 10 steps, which alone caps utilization at
200 / 210 = 0.952. Part 1 therefore sets ttft_s to one decode step; part 1b repeats the run
with the fake's default TTFT and prints its ceiling, for information.

    .venv/bin/python bench/llm_pool.py [--requests 1000] [--max-inflight 128]

The last line printed is one JSON object with every figure.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agents.llm.openai_pool import OpenAIPool  # noqa: E402
from agents.llm.types import GenOptions  # noqa: E402
from fakellm.config import FakeConfig  # noqa: E402
from fakellm.runner import FakeServer, start_fake_server  # noqa: E402

MAX_NUM_SEQS = 64
DECODE_S_PER_TOKEN = 0.002
COMPLETION_TOKENS = 200
# Asks for far more than 200 tokens (the fake writes at least 600 words), so max_tokens binds.
MESSAGES = [{"role": "user", "content": "Write a 3,000-word essay on the history of bridges."}]
DEFAULT_TTFT_S = FakeConfig.ttft_s
MIN_UTILIZATION = 0.90
MAX_IMBALANCE = 0.10


def start_server(ttft_s: float = DECODE_S_PER_TOKEN) -> FakeServer:
    return start_fake_server(
        timing=True, max_num_seqs=MAX_NUM_SEQS, decode_s_per_token=DECODE_S_PER_TOKEN, ttft_s=ttft_s
    )


def ceiling(config: dict, prompt_tokens: int) -> float:
    """Best possible utilization of the timing model: the share of a slot's time spent decoding."""
    decode = COMPLETION_TOKENS * config["decode_s_per_token"]
    return decode / (config["ttft_s"] + config["prefill_s_per_token"] * prompt_tokens + decode)


async def warm_up(pool: OpenAIPool) -> None:
    """Resolve the model name and open the connections, as in a service that is running."""
    await asyncio.gather(*(pool.chat(MESSAGES, GenOptions(max_tokens=1)) for _ in range(pool.max_inflight)))


async def run_load(pool: OpenAIPool, n: int) -> tuple[int, float, int]:
    """Send n requests at once; (completion tokens received, wall seconds, prompt tokens)."""
    options = GenOptions(max_tokens=COMPLETION_TOKENS, temperature=0.7)
    started = time.perf_counter()
    calls = []
    for _ in range(n):
        # Submitted in a tight loop that lets the event loop run between submissions, as
        # requests arrive from many jobs: the first ones go out while the rest are queued.
        calls.append(asyncio.ensure_future(pool.chat(MESSAGES, options)))
        await asyncio.sleep(0)
    results = await asyncio.gather(*calls)
    wall = time.perf_counter() - started
    short = [r.completion_tokens for r in results if r.completion_tokens != COMPLETION_TOKENS]
    if short:
        raise SystemExit(f"{len(short)} replies were not {COMPLETION_TOKENS} tokens long (e.g. {short[:5]})")
    return sum(r.completion_tokens for r in results), wall, results[0].prompt_tokens


async def part1(n: int, max_inflight: int, ttft_s: float) -> dict:
    server = start_server(ttft_s)
    try:
        pool = OpenAIPool([server.base_url], max_inflight=max_inflight)
        try:
            await warm_up(pool)
            server.reset()
            tokens, wall, prompt_tokens = await run_load(pool, n)
        finally:
            await pool.aclose()
        stats = server.stats()
    finally:
        server.close()
    if stats["generation_tokens"] != tokens:
        raise SystemExit(f"the server generated {stats['generation_tokens']} tokens, the client got {tokens}")
    capacity = stats["capacity_tokens_per_s"]
    tokens_per_s = tokens / wall
    return {
        "requests": n,
        "completion_tokens": tokens,
        "wall_s": round(wall, 3),
        "tokens_per_s": round(tokens_per_s, 1),
        "capacity_tokens_per_s": capacity,
        "utilization": round(tokens_per_s / capacity, 4),
        "ttft_s": ttft_s,
        "ceiling": round(ceiling(stats["config"], prompt_tokens), 4),
        "server_max_running": stats["max_running_observed"],
        "server_max_waiting": stats["max_waiting_observed"],
    }


async def part2(n: int, max_inflight: int) -> dict:
    servers = [start_server(), start_server()]
    try:
        pool = OpenAIPool([s.base_url for s in servers], max_inflight=max_inflight)
        try:
            await warm_up(pool)
            for s in servers:
                s.reset()
            before = [h["served"] for h in pool.health()]
            tokens, wall, _ = await run_load(pool, n)
            served_by_pool = [h["served"] - b for h, b in zip(pool.health(), before)]
        finally:
            await pool.aclose()
        served = [s.stats()["finished"].get("length", 0) for s in servers]
    finally:
        for s in servers:
            s.close()
    if served != served_by_pool:
        raise SystemExit(f"the servers counted {served} requests, the pool {served_by_pool}")
    a, b = served
    capacity = 2 * MAX_NUM_SEQS / DECODE_S_PER_TOKEN
    return {
        "served": served,
        "imbalance": round(abs(a - b) / max(a, b), 4),
        "wall_s": round(wall, 3),
        "tokens_per_s": round(tokens / wall, 1),
        "capacity_tokens_per_s": capacity,
        "utilization": round(tokens / wall / capacity, 4),
    }


def use_fast_loop(name: str) -> None:
    if name == "uvloop":
        try:
            import uvloop

            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        except ImportError:
            pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--max-inflight", type=int, default=2 * MAX_NUM_SEQS, help="the pool's per-endpoint limit")
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop", help="uvicorn's default loop")
    args = parser.parse_args()
    use_fast_loop(args.loop)

    one = asyncio.run(part1(args.requests, args.max_inflight, DECODE_S_PER_TOKEN))
    print(f"part 1: one endpoint, {one['requests']} requests x {COMPLETION_TOKENS} tokens, "
          f"pool max_inflight={args.max_inflight}, server max_num_seqs={MAX_NUM_SEQS}, "
          f"{DECODE_S_PER_TOKEN * 1000:g} ms/token, TTFT {one['ttft_s'] * 1000:g} ms")
    print(f"  achieved    {one['tokens_per_s']:>10,.0f} generation tokens/s  ({one['wall_s']} s)")
    print(f"  capacity    {one['capacity_tokens_per_s']:>10,.0f} tokens/s")
    print(f"  utilization {one['utilization']:.3f}  (required >= {MIN_UTILIZATION}; timing-model ceiling "
          f"{one['ceiling']:.3f})  server peak running {one['server_max_running']}, "
          f"waiting {one['server_max_waiting']}")

    slow = asyncio.run(part1(args.requests, args.max_inflight, DEFAULT_TTFT_S))
    print(f"part 1b: the same with the fake's default TTFT of {DEFAULT_TTFT_S * 1000:g} ms (information)")
    print(f"  achieved    {slow['tokens_per_s']:>10,.0f} tokens/s, utilization {slow['utilization']:.3f}, "
          f"ceiling {slow['ceiling']:.3f} ({slow['utilization'] / slow['ceiling']:.3f} of the ceiling)")

    two = asyncio.run(part2(args.requests, args.max_inflight))
    print("part 2: two endpoints, the same load")
    print(f"  served      {two['served'][0]} / {two['served'][1]} requests, "
          f"imbalance {two['imbalance']:.3f}  (required <= {MAX_IMBALANCE})")
    print(f"  achieved    {two['tokens_per_s']:>10,.0f} tokens/s of {two['capacity_tokens_per_s']:,.0f} "
          f"(utilization {two['utilization']:.3f}, information)")

    ok = one["utilization"] >= MIN_UTILIZATION and two["imbalance"] <= MAX_IMBALANCE
    summary = {
        "utilization": one["utilization"],
        "imbalance": two["imbalance"],
        "tokens_per_s": one["tokens_per_s"],
        "capacity_tokens_per_s": one["capacity_tokens_per_s"],
        "requests": args.requests,
        "completion_tokens_per_request": COMPLETION_TOKENS,
        "max_inflight": args.max_inflight,
        "wall_s": one["wall_s"],
        "ttft_s": one["ttft_s"],
        "ceiling": one["ceiling"],
        "default_ttft": {k: slow[k] for k in ("ttft_s", "utilization", "ceiling", "tokens_per_s")},
        "two_endpoints": two,
        "ok": ok,
    }
    print(json.dumps(summary))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
