"""Self-Lengthen (`lengthen`, protocol paper) on the real embedded model.

The first four English prompts of the bundled LongBench-Write set whose required length is
1,000 to 2,000 words, each given as the instruction only: the Generator answers, then three
micro-iterations, then the paper's 1.2x gate, tried again from the initial answer while it
fails (the reference's 20 attempts; `--extension-attempts`). Prints per item the initial
answer's words, each iteration's candidate (accepted, or the filter that rejected it), the
growth, the attempts and the gate; last line one JSON object:
{"items": 4, "passed_gate": k, "growth": [...], "attempts": [...], "rejections": {reason: n}, "wall_s": x}.

    .venv/bin/python bench/lengthen_embedded.py [--items 4] [--extension-attempts 20] [--model-path FILE.gguf]

Runs in this process on the model the settings name (no LLM_ENDPOINTS: the embedded GGUF
model, started in its own process), so it measures the method on a real model, not plumbing.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agents import evaluation, selflengthen  # noqa: E402
from agents.context import JobContext, ListEventSink, MemoryStepStore  # noqa: E402
from agents.llm.factory import make_llm_client  # noqa: E402
from agents.settings import Settings  # noqa: E402
from agents.text import detect_language  # noqa: E402


def english_prompts(n: int) -> list[evaluation.EvalItem]:
    items = evaluation.load_prompt_set(evaluation.BUNDLED_PROMPT_SET)
    chosen = [i for i in items if 1000 <= i.length <= 2000 and detect_language(i.prompt) == "en"]
    return chosen[:n]


async def run_one(llm, settings: Settings, item: evaluation.EvalItem, extension_attempts: int) -> dict:
    events = ListEventSink()
    ctx = JobContext(llm, store=MemoryStepStore(), events=events, settings=settings, job_id=f"lengthen-{item.index}")
    params = selflengthen.LengthenParams(instruction=item.prompt, protocol="paper",
                                         extension_attempts=extension_attempts)
    started = time.perf_counter()
    try:
        result = await selflengthen.run(ctx, params)
        error = None
    except Exception as exc:  # noqa: BLE001 - a failed gate (or model fault) is a figure here
        result, error = None, f"{type(exc).__name__}: {exc}"
    rounds = [data for kind, data in events.events if kind == "progress"]
    outcome = {
        "index": item.index,
        "wall_s": round(time.perf_counter() - started, 1),
        "rounds": [{"attempt": r.get("attempt"), "words": r.get("words"), "accepted": r.get("accepted"),
                    "reason": r.get("reason")} for r in rounds],
        "attempts": max((r.get("attempt") or 0 for r in rounds), default=0),
        "error": error,
    }
    if result is not None:
        outcome.update(initial=result["initial"]["words"], final=result["word_count"], ratio=result["gate"]["ratio"],
                       passed=result["gate"]["passed"], initial_attempts=len(result["initial"]["attempts"]))
    else:
        outcome.update(passed=False)
    return outcome


async def main(args: argparse.Namespace) -> None:
    overrides = {"embedded_model_path": args.model_path} if args.model_path else {}
    settings = Settings.load(**overrides)
    llm = make_llm_client(settings)
    started = time.perf_counter()
    outcomes = []
    try:
        await llm.ensure_ready()
        for item in english_prompts(args.items):
            outcome = await run_one(llm, settings, item, args.extension_attempts)
            outcomes.append(outcome)
            rounds = ", ".join(f"{r['attempt']}.{n}: {r['words']} {'ok' if r['accepted'] else r['reason']}"
                               for n, r in enumerate(outcome["rounds"], 1))
            head = (f"#{item.index} ({item.length} words asked): initial {outcome.get('initial', '?')} -> "
                    f"{outcome.get('final', '?')} words, {outcome.get('ratio', '-')}x, gate "
                    f"{'passed' if outcome['passed'] else 'failed'} after {outcome['attempts']} attempts in {outcome['wall_s']} s")
            print(head, flush=True)
            print(f"    iterations: {rounds or 'none'}", flush=True)
            if outcome["error"]:
                print(f"    {outcome['error']}", flush=True)
    finally:
        await llm.aclose()
    wall = time.perf_counter() - started
    rejections = Counter(r["reason"] for o in outcomes for r in o["rounds"] if not r["accepted"])
    summary = {
        "items": len(outcomes),
        "passed_gate": sum(o["passed"] for o in outcomes),
        "growth": [o.get("ratio") for o in outcomes],
        "attempts": [o["attempts"] for o in outcomes],
        "rejections": dict(rejections),
        "wall_s": round(wall, 1),
    }
    print(f"{summary['passed_gate']} of {summary['items']} passed the 1.2x gate in {wall:.0f} s "
          f"(model: {llm.model_name})")
    print(json.dumps(summary))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=4)
    parser.add_argument("--extension-attempts", type=int, default=selflengthen.DEFAULT_EXTENSION_ATTEMPTS)
    parser.add_argument("--model-path", help="another GGUF file for the embedded model")
    asyncio.run(main(parser.parse_args()))
