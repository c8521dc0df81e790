"""TLG throughput: 2,000 TLG items in `controlled` mode against the fake server in vLLM timing
mode (max_num_seqs=64, 2 ms per token, TTFT one decode step, prefix cache), each a `chat`
job run in this process through the endpoint pool, as `longform eval tlg --local` runs them
(the kind validates the params and the result; steps in memory).

The items are `longform eval tlg`'s set over the bundled instructions, repeated to 2,000 and
drawn with seed 10 (uniform targets, Ruler's draw).

Prints the generation tokens/s the fake server produced over its capacity (target >= 0.85),
and what the controller's extra calls cost: model calls per item beyond the first (the
answer a single call would give), the share of generation and prompt tokens they account
for, and the server time that is at its capacity; per level too. PM/FM on the fake server
are plumbing (its lengths are its own constants).
Last line: {"utilization": ..., "extra_calls_per_item": ..., ...}

Run: .venv/bin/python bench/tlg.py [--items 2000] [--concurrency 256]
"""
from __future__ import annotations

import argparse
import asyncio
import contextvars
import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agents import tlg  # noqa: E402
from agents.llm.openai_pool import OpenAIPool  # noqa: E402
from agents.llm.types import GenOptions  # noqa: E402
from agents.metrics.ruler import LEVELS  # noqa: E402
from agents.settings import Settings  # noqa: E402
from fakellm.runner import start_fake_server  # noqa: E402

MAX_NUM_SEQS = 64
MIN_UTILIZATION = 0.85
FAKE_CONFIG = dict(timing=True, max_num_seqs=MAX_NUM_SEQS, decode_s_per_token=0.002, ttft_s=0.002,
                   max_model_len=32768)

_ITEM: contextvars.ContextVar[int | None] = contextvars.ContextVar("tlg_item", default=None)


class CountingLLM:
    """The pool, recording each generation call's tokens under the item whose job made it
    (a context variable set around each run: every job is its own task)."""

    def __init__(self, inner: OpenAIPool):
        self.inner = inner
        self.calls: dict[int, list[tuple[int, int]]] = defaultdict(list)  # item -> [(prompt, completion)]

    def _note(self, result) -> None:
        index = _ITEM.get()
        if index is not None:
            self.calls[index].append((result.prompt_tokens, result.completion_tokens))

    async def chat(self, messages, options: GenOptions | None = None):
        result = await self.inner.chat(messages, options)
        self._note(result)
        return result

    async def complete(self, prompt, options: GenOptions | None = None):
        result = await self.inner.complete(prompt, options)
        self._note(result)
        return result

    def __getattr__(self, name: str) -> Any:  # count_tokens, model_name, context_window, ...
        return getattr(self.inner, name)


def make_items(count: int) -> list[tlg.TLGItem]:
    bundled = tlg.load_instructions(tlg.BUNDLED_INSTRUCTIONS)
    repeated = [tlg.Instruction(k + 1, bundled[k % len(bundled)].text) for k in range(count)]
    return tlg.build_set(repeated, seed=tlg.DEFAULT_SEED, limit=count)


async def run(items: list[tlg.TLGItem], concurrency: int, max_inflight: int, fake) -> dict[str, Any]:
    pool = OpenAIPool([fake.base_url], max_inflight=max_inflight)
    llm = CountingLLM(pool)
    try:
        await pool.ensure_ready()
        # Open the connections first, as in a service that is running.
        await asyncio.gather(*(pool.chat([{"role": "user", "content": "hi"}], GenOptions(max_tokens=1))
                               for _ in range(max_inflight)))
        inner = tlg.local_runner(llm, settings=Settings())

        async def run_item(item, mode, protocol):
            _ITEM.set(item.index)
            return await inner(item, mode, protocol)

        fake.reset()
        started = time.perf_counter()
        report = await tlg.run_tlg(items, run_item, ["controlled"], concurrency=concurrency)
        elapsed = time.perf_counter() - started
    finally:
        await pool.aclose()
    return {"report": report, "elapsed": elapsed, "calls": dict(llm.calls)}


def cost(items: list[tlg.TLGItem], calls: dict[int, list[tuple[int, int]]]) -> dict[str, Any]:
    """Calls beyond each item's first and the tokens they took, overall and per level."""
    def figures(group: list[tlg.TLGItem]) -> dict[str, Any]:
        mine = [calls.get(i.index, []) for i in group]
        n_calls = sum(len(c) for c in mine)
        gen = sum(c for cs in mine for _, c in cs)
        prompt = sum(p for cs in mine for p, _ in cs)
        extra_gen = sum(c for cs in mine for _, c in cs[1:])
        extra_prompt = sum(p for cs in mine for p, _ in cs[1:])
        return {
            "items": len(group),
            "calls_per_item": round(n_calls / max(1, len(group)), 3),
            "extra_calls_per_item": round((n_calls - sum(1 for c in mine if c)) / max(1, len(group)), 3),
            "generation_tokens_per_item": round(gen / max(1, len(group)), 1),
            "extra_generation_share": round(extra_gen / max(1, gen), 4),
            "extra_prompt_share": round(extra_prompt / max(1, prompt), 4),
            "extra_generation_tokens": extra_gen,
            "extra_prompt_tokens": extra_prompt,
        }

    out = figures(items)
    out["by_level"] = {name: figures([i for i in items if i.target in members]) for name, members in LEVELS.items()}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=256, help="jobs in flight at once")
    parser.add_argument("--max-inflight", type=int, default=2 * MAX_NUM_SEQS, help="the pool's per-endpoint limit")
    args = parser.parse_args()
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass

    items = make_items(args.items)
    with start_fake_server(**FAKE_CONFIG) as fake:
        out = asyncio.run(run(items, args.concurrency, args.max_inflight, fake))
        stats = fake.stats()
    report, elapsed = out["report"], out["elapsed"]
    overall = report["arms"]["controlled"]["overall"]
    capacity = stats["capacity_tokens_per_s"]
    tokens_per_s = stats["generation_tokens"] / elapsed
    spent = cost(items, out["calls"])
    strategies: dict[str, int] = defaultdict(int)
    for row in report["items"]:
        strategies[str(row["strategy"])] += 1
    failed = [r for r in report["items"] if r["error"]]
    counted = sum(len(c) for c in out["calls"].values())
    reported = sum(r["calls"] or 0 for r in report["items"])
    if not counted == reported == stats["generation_requests"]:
        print(f"note: calls differ: counted here {counted}, reported by the jobs {reported}, "
              f"served by the fake {stats['generation_requests']}")
    server_s_extra = spent["extra_generation_tokens"] / capacity

    print(f"{len(items)} TLG items (controlled) in {elapsed:.1f} s: {stats['generation_requests']} model calls, "
          f"{overall['failed']} failed; strategies {dict(strategies)}")
    print(f"generation {tokens_per_s:,.0f} tok/s of {capacity:,.0f} capacity: utilization "
          f"{tokens_per_s / capacity:.3f} (target >= {MIN_UTILIZATION}); server peak running "
          f"{stats['max_running_observed']}, waiting {stats['max_waiting_observed']}")
    print(f"the controller's extra calls: {spent['extra_calls_per_item']:.2f} per item "
          f"({spent['calls_per_item']:.2f} calls per item in all); they generated "
          f"{100 * spent['extra_generation_share']:.1f}% of the generation tokens "
          f"({spent['extra_generation_tokens']:,} tokens, {server_s_extra:.1f} s of the server at capacity, "
          f"{100 * server_s_extra / elapsed:.0f}% of this run) and read {100 * spent['extra_prompt_share']:.1f}% "
          f"of the prompt tokens")
    for name, level in spent["by_level"].items():
        print(f"  {name}: {level['items']} items, {level['extra_calls_per_item']:.2f} extra calls per item, "
              f"{level['generation_tokens_per_item']:.0f} generation tokens per item "
              f"({100 * level['extra_generation_share']:.1f}% in extra calls)")
    print(f"PM {overall['PM']:.1f} / FM {overall['FM']:.1f}, filter pass {overall['filter_pass']:.1f} "
          f"(fake server: plumbing, not a model's figures)")
    if failed:
        print(f"first failure: {failed[0]['error'][:300]}")
    figures = {
        "utilization": round(tokens_per_s / capacity, 4),
        "extra_calls_per_item": spent["extra_calls_per_item"],
        "calls_per_item": spent["calls_per_item"],
        "extra_generation_share": spent["extra_generation_share"],
        "extra_prompt_share": spent["extra_prompt_share"],
        "extra_server_seconds": round(server_s_extra, 2),
        "tokens_per_s": round(tokens_per_s, 1),
        "capacity_tokens_per_s": capacity,
        "seconds": round(elapsed, 2),
        "items": len(items),
        "failed": overall["failed"],
        "model_calls": stats["generation_requests"],
        "generation_tokens": stats["generation_tokens"],
        "prompt_tokens": stats["prompt_tokens"],
        "PM": round(overall["PM"], 2),
        "FM": round(overall["FM"], 2),
        "filter_pass": round(overall["filter_pass"], 2),
        "by_level": {name: {k: v for k, v in level.items() if k in ("items", "extra_calls_per_item",
                                                                    "generation_tokens_per_item")}
                     for name, level in spent["by_level"].items()},
    }
    print(json.dumps(figures))
    return 0 if figures["utilization"] >= MIN_UTILIZATION and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
