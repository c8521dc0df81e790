"""Benchmark: the BooookScore reference package vs Longform's `summarize` with protocol paper.

    .venv/bin/python bench/compare_booookscore.py [--method hier|inc] [--chunk-size 2048]
        [--max-summary-len 900] [--prompts DIR] [--stress] [--decode-ms 2] [--max-num-seqs 64]

Both summarize the bundled book (Pride and Prejudice, Project Gutenberg header and footer
stripped) against the same fake vLLM server (fakellm, real HTTP on loopback, timing mode):
- the reference: booookscore 0.1.3 from PyPI in its own virtualenv (made or reused by
  scripts/reference_booookscore.sh), run as its README says: `python -m booookscore.chunk`
  then `python -m booookscore.summ --api openai` in a working directory holding `prompts/`,
  with OPENAI_BASE_URL at the fake server (its OpenAI client reads it) and max_context_len =
  the server's context window from /v1/models. Its calls are the server's request counter;
  its chunks and levels come from its own output files;
- Longform: the `summarize` kind in this process with protocol "paper", the same chunk size
  and max_summary_len, through the normal client pool (its in-flight limit: --inflight).
The prompt files are Longform's bundled ones (prompts/get_summaries_*/...), or the files in
--prompts DIR (e.g. a copy of the originals), which the reference reads from its working
directory and Longform through PROMPTS_DIR. The fake answers deterministically from the
prompt text, so byte-identical prompts get identical answers: the bench checks that the
chunks, the level structure (summaries per level), the number of model calls, and the final
summary are equal, prints both runs and their wall times (chunking included), and ends with
one JSON line {"chunks": [ref, ours], "levels": [ref, ours], "calls": [ref, ours], "speedup"}.
It exits 1 when chunks, levels or calls differ.

--stress makes the fake model miss its limits so the retry paths run: the prompt copies say
"about N words" where the bundled ones say "within N words", and the fake writes N +- 60 %
words for "about N" (so some answers overflow max_tokens and are re-asked), and answers to
prompts that ask no length run 600 to 1,000 words (incremental updates overflow
max_summary_len and compress).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import prompts  # noqa: E402
from agents import summarize  # noqa: E402
from agents.context import JobContext, MemoryJobServices, MemoryStepStore  # noqa: E402
from agents.gutenberg import strip_gutenberg  # noqa: E402
from agents.llm.openai_pool import OpenAIPool  # noqa: E402
from agents.settings import Settings  # noqa: E402
from agents.summarize import paper  # noqa: E402
from agents.text import count_tokens  # noqa: E402
from fakellm.runner import FakeServer  # noqa: E402
from workers.runtime import calibration_text  # noqa: E402

BOOK = ROOT / "tests" / "data" / "pride_and_prejudice.txt"
SETUP = ROOT / "scripts" / "reference_booookscore.sh"
TEMPLATES = {
    "hier": [paper.HIER_INIT, paper.HIER_MERGE, paper.HIER_MERGE_CONTEXT],
    "inc": [paper.INC_INIT, paper.INC_UPDATE, paper.INC_COMPRESS],
}
METHODS = {"hier": "hierarchical", "inc": "incremental"}
# The reference's chunk module imports torch and never uses it; torch is not installed.
CHUNK_DRIVER = (
    "import runpy, sys, types; sys.modules['torch'] = types.ModuleType('torch'); "
    "sys.argv = ['booookscore.chunk'] + sys.argv[1:]; runpy.run_module('booookscore.chunk', run_name='__main__')"
)


def reference_venv(path: str | None) -> Path:
    if path:
        return Path(path)
    out = subprocess.run(["bash", str(SETUP)], check=True, stdout=subprocess.PIPE, text=True).stdout
    return Path(out.strip().splitlines()[-1])


def write_prompts(work: Path, method: str, source: str | None, stress: bool) -> Path:
    """The reference's prompts/ directory in `work`: the files of `source`, else Longform's."""
    target = work / "prompts"
    for name in TEMPLATES[method]:
        origin = Path(source) / name if source else prompts.TEMPLATE_DIR / name
        if not origin.is_file():
            raise SystemExit(f"{origin} is missing: --prompts needs the reference's file names "
                             f"({', '.join(TEMPLATES[method])})")
        text = origin.read_text(encoding="utf-8")
        if stress:
            text = text.replace("within {} words", "about {} words")
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        (target / name).write_text(text, encoding="utf-8")
    return target


def run_reference(venv: Path, work: Path, server: FakeServer, method: str, book: str, chunk_size: int,
                  max_summary_len: int, context_window: int, timeout_s: float) -> dict:
    python = str(venv / "bin" / "python")
    package_dir = subprocess.run(
        [python, "-c", "import booookscore, os; print(os.path.dirname(booookscore.__file__))"],
        check=True, stdout=subprocess.PIPE, text=True,
    ).stdout.strip()
    env = {
        **os.environ,
        # summ.py imports `utils` as a top-level module (its own booookscore/utils.py).
        "PYTHONPATH": package_dir,
        "OPENAI_BASE_URL": server.base_url,
        "TIKTOKEN_CACHE_DIR": str(venv / "tiktoken-cache"),
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }
    with open(work / "books.pkl", "wb") as f:
        pickle.dump({"pride_and_prejudice": book}, f)
    (work / "key.txt").write_text("fake-key\n")
    log = open(work / "reference.log", "w")
    try:
        start = time.perf_counter()
        subprocess.run([python, "-c", CHUNK_DRIVER, "--chunk_size", str(chunk_size), "--input_path", "books.pkl",
                        "--output_path", "chunks.pkl"], cwd=work, env=env, check=True, stdout=log, stderr=log,
                       timeout=timeout_s)
        chunked = time.perf_counter()
        server.reset()
        subprocess.run([python, "-m", "booookscore.summ", "--book_path", "chunks.pkl", "--summ_path", "summaries.json",
                        "--model", server.model, "--api", "openai", "--api_key", "key.txt", "--method", method,
                        "--chunk_size", str(chunk_size), "--max_context_len", str(context_window),
                        "--max_summary_len", str(max_summary_len)],
                       cwd=work, env=env, check=True, stdout=log, stderr=log, timeout=timeout_s)
        end = time.perf_counter()
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        log.close()
        lines = (work / "reference.log").read_text(errors="replace").strip().splitlines()
        return {"failed": f"{exc}; its last words: {lines[-1] if lines else ''}",
                "calls": server.stats()["generation_requests"]}
    log.close()
    stats = server.stats()
    with open(work / "chunks.pkl", "rb") as f:
        chunks = pickle.load(f)["pride_and_prejudice"]
    summaries = json.loads((work / "summaries.json").read_text())["pride_and_prejudice"]
    if method == "hier":
        by_level = summaries["summaries_dict"]
        levels = [len(by_level[k]) for k in sorted(by_level, key=int)]
        final = summaries["final_summary"]
    else:
        levels, final = [], summaries[-1]
    return {
        "chunks": len(chunks), "chunk_texts": chunks, "levels": levels, "final": final,
        "calls": stats["generation_requests"],
        "errors": {k: v for k, v in stats["status_counts"].items() if k != "200"},
        "wall_s": end - start, "chunk_s": chunked - start, "summarize_s": end - chunked,
    }


async def run_longform(server: FakeServer, method: str, book: str, chunk_size: int, max_summary_len: int,
                       prompts_dir: Path | None, inflight: int) -> dict:
    pool = OpenAIPool([server.base_url], max_inflight=inflight)
    # As a worker does at start-up: learn the server's limits and calibrate token counts
    # before the clock starts.
    await pool.count_tokens(calibration_text())
    server.reset()
    store = MemoryStepStore()
    settings = Settings(prompts_dir=str(prompts_dir) if prompts_dir else "")
    ctx = JobContext(pool, store=store, settings=settings, services=MemoryJobServices(documents={"book": book}))
    params = {"document_id": "book", "protocol": "paper", "method": METHODS[method], "chunk_size": chunk_size,
              "max_summary_len": max_summary_len}
    try:
        start = time.perf_counter()
        result = await summarize.run(ctx, params)
        wall = time.perf_counter() - start
    finally:
        await pool.aclose()
    summarize.KIND.validate_result(result)
    stats = server.stats()
    return {
        "chunks": result["chunks"], "levels": [lv["nodes"] for lv in result["levels"]], "final": result["summary"],
        "calls": result["calls"], "server_calls": stats["generation_requests"],
        "errors": {k: v for k, v in stats["status_counts"].items() if k != "200"},
        "wall_s": wall, "peak": stats["max_running_observed"], "result": result,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--method", choices=["hier", "inc"], default="hier")
    ap.add_argument("--chunk-size", type=int, default=2048)
    ap.add_argument("--max-summary-len", type=int, default=900)
    ap.add_argument("--prompts", help="a directory with the reference's prompt file names (default: Longform's)")
    ap.add_argument("--stress", action="store_true", help="make the fake model miss its limits (retry paths)")
    ap.add_argument("--decode-ms", type=float, default=2.0, help="fake decode time per token (ms)")
    ap.add_argument("--max-num-seqs", type=int, default=64)
    ap.add_argument("--inflight", type=int, default=64, help="Longform's in-flight limit (LLM_MAX_INFLIGHT)")
    ap.add_argument("--venv", help="the reference's virtualenv (default: made by scripts/reference_booookscore.sh)")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds the reference may take")
    ap.add_argument("--keep", action="store_true", help="keep the working directory (reference files, log)")
    args = ap.parse_args()

    venv = reference_venv(args.venv)
    book = strip_gutenberg(BOOK.read_text(encoding="utf-8"))
    count_tokens("warm up")  # as a worker does at start-up: the tokenizer is loaded
    work = Path(tempfile.mkdtemp(prefix="booookscore-compare-"))
    prompts_dir = write_prompts(work, args.method, args.prompts, args.stress)
    # Longform reads the same files through PROMPTS_DIR when they are not its own unchanged.
    overlay = prompts_dir if (args.prompts or args.stress) else None
    config = dict(timing=True, max_num_seqs=args.max_num_seqs, decode_s_per_token=args.decode_ms / 1000)
    if args.stress:
        config.update(length_noise=0.6, default_min_words=600, default_max_words=1000)
    try:
        with FakeServer(**config) as server:
            context_window = int(server._call("GET", "/v1/models")["data"][0]["max_model_len"])
            print(f"fake vLLM: timing mode, decode {args.decode_ms} ms/token, max_num_seqs {args.max_num_seqs}, "
                  f"context window {context_window}{', stress' if args.stress else ''}; method {args.method}, "
                  f"chunk size {args.chunk_size}, max_summary_len {args.max_summary_len}; prompts: "
                  f"{args.prompts or 'Longform bundled'}{' (about N words)' if args.stress else ''}")
            ref = run_reference(venv, work, server, args.method, book, args.chunk_size, args.max_summary_len,
                                context_window, args.timeout)
            ours = asyncio.run(run_longform(server, args.method, book, args.chunk_size, args.max_summary_len,
                                            overlay, args.inflight))
    finally:
        if args.keep:
            print(f"working directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    if "failed" in ref:
        print(f"reference (booookscore 0.1.3): FAILED after {ref['calls']} calls: {ref['failed']}")
        print(f"Longform (protocol paper):     {ours['wall_s']:7.2f} s  chunks {ours['chunks']}  levels "
              f"{ours['levels']}  calls {ours['calls']}")
        print(json.dumps({"chunks": [None, ours["chunks"]], "levels": [None, ours["levels"]],
                          "calls": [None, ours["calls"]], "speedup": None}))
        return 1
    speedup = ref["wall_s"] / ours["wall_s"]
    print(f"reference (booookscore 0.1.3): {ref['wall_s']:7.2f} s (chunking {ref['chunk_s']:.2f} s, summarizing "
          f"{ref['summarize_s']:.2f} s)  chunks {ref['chunks']}  levels {ref['levels']}  calls {ref['calls']}"
          f"  non-200 answers {ref['errors'] or 'none'}")
    print(f"Longform (protocol paper):     {ours['wall_s']:7.2f} s (chunking included)  chunks {ours['chunks']}  "
          f"levels {ours['levels']}  calls {ours['calls']} (server counted {ours['server_calls']}, peak "
          f"{ours['peak']} running)  non-200 answers {ours['errors'] or 'none'}")
    record = ours["result"]["protocol"]
    print(f"Longform's protocol record: comparable_to_paper {record['comparable_to_paper']}, prompts "
          f"{sorted(set(record['prompts'].values()))}, differs {record['differs_from_paper'] or 'nothing'}"
          + (" (the PROMPTS_DIR files here are Longform's wording, altered by --stress)" if args.stress else ""))
    same = {
        "chunks": ref["chunks"] == ours["chunks"],
        "levels": ref["levels"] == ours["levels"],
        "calls": ref["calls"] == ours["calls"] == ours["server_calls"],
        "final summary": ref["final"] == ours["final"],
    }
    print("equal: " + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in same.items()))
    print(f"ratios (reference / Longform): calls {ref['calls'] / max(1, ours['calls']):.2f}, wall time {speedup:.2f}x")
    print(json.dumps({"chunks": [ref["chunks"], ours["chunks"]], "levels": [ref["levels"], ours["levels"]],
                      "calls": [ref["calls"], ours["calls"]], "speedup": round(speedup, 2)}))
    return 0 if same["chunks"] and same["levels"] and same["calls"] else 1


if __name__ == "__main__":
    sys.exit(main())
