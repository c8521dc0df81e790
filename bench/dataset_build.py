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
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from db.schema import upgrade  # noqa: E402
from fakellm.runner import start_fake_server  # noqa: E402
from tests.processes import start_serve  # noqa: E402

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
    # As recommended for vLLM in the README: --scheduling-policy priority, LLM_PRIORITY_SCHEDULING=1.
    # Time to first token: one decode step (vLLM prefills a new sequence within the next scheduler
    # step, as bench/llm_pool.py assumes too); prompt tokens missing from the prefix cache still
    # cost prefill time per token.
    fake_config = dict(timing=True, max_num_seqs=64, decode_s_per_token=0.002, ttft_s=0.002,
                       max_model_len=32768, scheduling_policy="priority")
    with start_fake_server(**fake_config) as fake, tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        upgrade(url)
        env = {"DATABASE_URL": url, "LLM_ENDPOINTS": fake.base_url, "LONGFORM_DATA_DIR": tmp,
               "LLM_MAX_INFLIGHT": "128", "LLM_PRIORITY_SCHEDULING": "1", "WORKER_CONCURRENCY": str(args.items + 8)}
        proc, api = start_serve(env, Path(tmp), "dataset-bench")
        try:
            with httpx.Client(base_url=api, timeout=60) as client:
                fake.reset()
                start = time.perf_counter()
                job = client.post("/v1/datasets", json={"items": instructions(args.items), "write": {"method": "agentwrite"}})
                job.raise_for_status()
                job_id = job.json()["id"]
                while True:
                    state = client.get(f"/v1/jobs/{job_id}").json()
                    if state["status"] in ("succeeded", "failed", "cancelled"):
                        break
                    time.sleep(0.1)
                elapsed = time.perf_counter() - start
        finally:
            proc.stop()
        stats = fake.stats()
    if state["status"] != "succeeded":
        raise SystemExit(f"dataset job {state['status']}: {state.get('error')}")
    result = state["result"]
    tokens_per_s = stats["generation_tokens"] / elapsed
    capacity = stats["capacity_tokens_per_s"]
    figures = {
        "utilization": round(tokens_per_s / capacity, 4),
        "prefix_hit_ratio": round(stats["prefix_cache_hits"] / max(1, stats["prefix_cache_queries"]), 4),
        "tokens_per_s": round(tokens_per_s, 1),
        "capacity_tokens_per_s": capacity,
        "seconds": round(elapsed, 2),
        "items": args.items,
        "kept": result.get("kept"),
        "model_calls": stats["generation_requests"],
        "generation_tokens": stats["generation_tokens"],
        "prompt_tokens": stats["prompt_tokens"],
        "max_running_observed": stats["max_running_observed"],
        "mean_length_score": result.get("stats", {}).get("mean_length_score"),
    }
    print(f"{args.items} items ({figures['kept']} kept by the gates) in {elapsed:.1f} s, {figures['model_calls']} model calls")
    print(f"generation {tokens_per_s:,.0f} tok/s of {capacity:,.0f} capacity: utilization {figures['utilization']:.3f} (target >= 0.85)")
    print(f"prefix cache: {stats['prefix_cache_hits']:,} of {stats['prefix_cache_queries']:,} prompt tokens, "
          f"ratio {figures['prefix_hit_ratio']:.3f} (target >= 0.6)")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
