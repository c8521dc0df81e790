"""Benchmark: hierarchical summarization of Pride and Prejudice, concurrent vs one call at a time.

    .venv/bin/python bench/summarize.py [--decode-ms 2] [--max-num-seqs 64] [--inflight 64]

Starts the fake vLLM server in timing mode (continuous batching, max_num_seqs sequences at
once, per-token decode time, prefill time for uncached prompt tokens, 8,192-token model
context) and runs the `summarize` agent twice on the book, each time with a fresh in-memory
step store:
- concurrent: our pool with its normal in-flight limit (all chunk summaries at once);
- sequential: the same pool limited to one request in flight, i.e. one call at a time as
  BooookScore's reference implementation makes them.
Both runs make the same calls (the fake answers deterministically per prompt and seed), so
the ratio of wall times is the speedup of our scheduling. Prints both times, the ratio,
the calls and tokens of each run, where the sequential calls are, and as last line one
JSON object.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import prompts  # noqa: E402
from agents import summarize  # noqa: E402
from agents.context import JobContext, MemoryJobServices, MemoryStepStore  # noqa: E402
from agents.llm.openai_pool import OpenAIPool  # noqa: E402
from agents.text import count_tokens  # noqa: E402
from fakellm.runner import FakeServer  # noqa: E402
from workers.runtime import calibration_text  # noqa: E402

BOOK = Path(__file__).resolve().parent.parent / "tests" / "data" / "pride_and_prejudice.txt"


async def run_once(base_url: str, inflight: int, book: str, params: dict) -> dict:
    pool = OpenAIPool([base_url], max_inflight=inflight, context_window=8192)
    # A worker calibrates its token count at start-up (WorkerRuntime.warm_up); so does this
    # pool, before the clock starts.
    await pool.count_tokens(calibration_text())
    store = MemoryStepStore()

    ctx = JobContext(pool, store=store, services=MemoryJobServices(documents={params["document_id"]: book}))
    try:
        start = time.perf_counter()
        result = await summarize.run(ctx, params)
        wall = time.perf_counter() - start
    finally:
        await pool.aclose()
    usage = list(store.usage.values())
    return {
        "wall_s": wall,
        "calls": result["calls"],
        "recorded_calls": sum(u.calls for u in usage),
        "prompt_tokens": sum(u.prompt_tokens for u in usage),
        "completion_tokens": sum(u.completion_tokens for u in usage),
        "chunks": result["chunks"],
        "levels": [(lv["level"], lv["nodes"]) for lv in result["levels"]],
        "chain": critical_path_steps(result, params["merge_context"]),
        "word_count": result["word_count"],
        "target_words": result["target_words"],
    }


def critical_path_steps(result: dict, merge_context: bool) -> int:
    """Steps after level 0 that must run one after another however many slots there are:
    with merge context, every merge (each waits for the previous one of its level); without,
    one merge per level; plus each length-revision round. Parallel samples inside a step
    (the final's length samples) overlap, so a step counts once."""
    levels = result["levels"][1:]
    merges = sum(lv["nodes"] for lv in levels) if merge_context else len(levels)
    revisions = sum(1 for n in result["tree"]["nodes"] if n["id"].startswith("revise/"))
    return merges + revisions


def compare(base_url: str, server: FakeServer, inflight: int, book: str, params: dict) -> dict:
    server.reset()
    concurrent = asyncio.run(run_once(base_url, inflight, book, params))
    peak = server.stats()["max_running_observed"]
    server.reset()
    sequential = asyncio.run(run_once(base_url, 1, book, params))
    return {"concurrent": concurrent, "sequential": sequential, "peak": peak,
            "speedup": sequential["wall_s"] / concurrent["wall_s"]}


def report(title: str, cmp: dict) -> None:
    print(title)
    for name in ("concurrent", "sequential"):
        r = cmp[name]
        print(f"  {name:>10}: {r['wall_s']:7.2f} s  calls {r['calls']}  prompt tokens {r['prompt_tokens']}  "
              f"completion tokens {r['completion_tokens']}  final {r['word_count']} words "
              f"(target {r['target_words']})")
    c = cmp["concurrent"]
    print(f"  levels (level, nodes): {c['levels']}; steps on the critical path after level 0: {c['chain']}; "
          f"peak running sequences: {cmp['peak']}")
    print(f"  speedup: {cmp['speedup']:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--decode-ms", type=float, default=2.0, help="fake decode time per token (ms)")
    ap.add_argument("--max-num-seqs", type=int, default=64)
    ap.add_argument("--inflight", type=int, default=64, help="our pool's in-flight limit (LLM_MAX_INFLIGHT)")
    ap.add_argument("--chunk-size", type=int, default=2048)
    ap.add_argument("--target-words", type=int, default=600)
    ap.add_argument("--skip-no-context", action="store_true", help="only the reference-style run")
    args = ap.parse_args()

    book = BOOK.read_text(encoding="utf-8")
    # As a worker does at start-up (WorkerRuntime.prepare): neither timed run pays for
    # loading the tokenizer or compiling the templates.
    count_tokens("warm up")
    prompts.warm()
    params = {
        "document_id": "pride_and_prejudice",
        "method": "hierarchical",
        "chunk_size": args.chunk_size,
        "target_words": args.target_words,
        "strip_gutenberg": True,
        "merge_context": True,
    }
    config = dict(timing=True, max_num_seqs=args.max_num_seqs, max_model_len=8192,
                  decode_s_per_token=args.decode_ms / 1000)
    with FakeServer(**config) as server:
        print(f"fake vLLM: timing mode, max_num_seqs={args.max_num_seqs}, decode {args.decode_ms} ms/token, "
              f"max_model_len 8192; our in-flight limit {args.inflight}")
        main_run = compare(server.base_url, server, args.inflight, book, params)
        report(f"hierarchical, merge_context=True (the reference's merges; default), "
               f"{main_run['concurrent']['chunks']} chunks of <= {args.chunk_size} tokens:", main_run)
        free_run = None
        if not args.skip_no_context:
            free_run = compare(server.base_url, server, args.inflight, book, {**params, "merge_context": False})
            report("hierarchical, merge_context=False (merges of a level in parallel):", free_run)

    c, s = main_run["concurrent"], main_run["sequential"]
    line = {
        "speedup": round(main_run["speedup"], 2),
        "calls": c["calls"],
        "calls_sequential": s["calls"],
        "wall_s": round(c["wall_s"], 2),
        "wall_s_sequential": round(s["wall_s"], 2),
        "tokens": c["prompt_tokens"] + c["completion_tokens"],
        "tokens_sequential": s["prompt_tokens"] + s["completion_tokens"],
        "critical_path_steps": c["chain"],
        "final_words": c["word_count"],
        "target_words": c["target_words"],
    }
    if free_run is not None:
        line.update(
            speedup_no_merge_context=round(free_run["speedup"], 2),
            calls_no_merge_context=free_run["concurrent"]["calls"],
            calls_sequential_no_merge_context=free_run["sequential"]["calls"],
        )
    print(json.dumps(line))


if __name__ == "__main__":
    main()
