"""Dataset build throughput: a 200-item `dataset` job (one AgentWrite `write` job per item)
against the fake server in vLLM timing mode (max_num_seqs=64, 2 ms per token, prefix cache,
priority scheduling),
through the real service (`longform serve`: REST, SQLite, the embedded worker).

Prints the generation tokens/s the fake server produced during the build over its capacity
(target >= 0.85), and the share of prompt tokens served from its prefix cache (target >= 0.6).
Last line: {"utilization": ..., "prefix_hit_ratio": ..., ...}

Run: .venv/bin/python bench/dataset_build.py [--items 200]
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.service import run_timed, timed_service, utilization  # noqa: E402

TOPICS = [
    "the history of lighthouses", "urban beekeeping", "the economics of container shipping", "glaciers and sea level",
    "the invention of the printing press", "how vaccines are tested", "night trains in Europe", "the chemistry of bread",
    "coral reef restoration", "the design of public libraries", "early computer networks", "desert agriculture",
    "the migration of eels", "wooden shipbuilding", "volcanic soils", "the story of the bicycle",
]
FORMS = ["an essay", "a feature article", "a report", "a guide", "a story"]


def instructions(count: int) -> list[dict]:
    rng = random.Random(7)
    items = []
    for i in range(count):
        words = rng.choice([1500, 2000, 2500, 3000, 3500, 4000])
        topic = TOPICS[i % len(TOPICS)]
        items.append({"instruction": f"Write {rng.choice(FORMS)} of about {words} words on {topic} (piece {i}).",
                      "target_words": words})
    return items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=200)
    args = parser.parse_args()
    with timed_service("dataset-bench", worker_concurrency=args.items + 8) as (fake, client):
        body = {"items": instructions(args.items), "write": {"method": "agentwrite"}}
        state, elapsed, stats = run_timed(fake, client, "/v1/datasets", body)
    if state["status"] != "succeeded":
        raise SystemExit(f"dataset job {state['status']}: {state.get('error')}")
    result = state["result"]
    measured = utilization(stats, elapsed)
    figures = {
        **{k: measured[k] for k in ("utilization", "prefix_hit_ratio", "tokens_per_s", "capacity_tokens_per_s", "seconds")},
        "items": args.items,
        "kept": result.get("kept"),
        **{k: measured[k] for k in ("model_calls", "generation_tokens", "prompt_tokens", "max_running_observed")},
        "mean_length_score": result.get("stats", {}).get("mean_length_score"),
    }
    print(f"{args.items} items ({figures['kept']} kept by the gates) in {elapsed:.1f} s, {figures['model_calls']} model calls")
    print(f"generation {measured['tokens_per_s']:,.0f} tok/s of {measured['capacity_tokens_per_s']:,.0f} capacity: "
          f"utilization {figures['utilization']:.3f} (target >= 0.85)")
    print(f"prefix cache: {stats['prefix_cache_hits']:,} of {stats['prefix_cache_queries']:,} prompt tokens, "
          f"ratio {figures['prefix_hit_ratio']:.3f} (target >= 0.6)")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
