"""Self-Lengthen (`lengthen`, protocol paper) on the real embedded model.

The first four English prompts of the bundled LongBench-Write set whose required length is
1,000 to 2,000 words, each given as the instruction only: the Generator answers, then three
micro-iterations, then the paper's 1.2x gate, tried again from the initial answer while it
fails (the reference's 20 attempts; `--extension-attempts`). Prints per item the initial
answer's words, each iteration's candidate (accepted, or the filter that rejected it), the
growth, the attempts and the gate (an item gets `--minutes-per-item`, 7, so that four stay
under 30 minutes; one that runs out counts as failed); last line one JSON object:
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
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agents import evaluation, selflengthen  # noqa: E402
from agents.context import JobContext, ListEventSink, MemoryStepStore, StepUsage  # noqa: E402
from agents.llm.factory import make_llm_client  # noqa: E402
from agents.settings import Settings  # noqa: E402
from agents.text import count_words_selflengthen, detect_language  # noqa: E402


def english_prompts(n: int) -> list[evaluation.EvalItem]:
    items = evaluation.load_prompt_set(evaluation.BUNDLED_PROMPT_SET)
    chosen = [i for i in items if 1000 <= i.length <= 2000 and detect_language(i.prompt) == "en"]
    return chosen[:n]


class PrintingStore(MemoryStepStore):
    """Prints each step as it finishes: a slow real-model run shows where its time goes."""

    def __init__(self, label: str):
        super().__init__()
        self.label = label

    async def finished(self, key: str, output: Any, usage: StepUsage) -> None:
        await super().finished(key, output, usage)
        print(f"    [{self.label}] {key}: {usage.completion_tokens} tokens in {usage.latency_s:.0f} s "
              f"({usage.finish_reason})", flush=True)


async def run_one(llm, settings: Settings, item: evaluation.EvalItem, extension_attempts: int,
                  budget_s: float) -> dict:
    events = ListEventSink()
    store = PrintingStore(f"#{item.index}")
    ctx = JobContext(llm, store=store, events=events, settings=settings, job_id=f"lengthen-{item.index}")
    params = selflengthen.LengthenParams(instruction=item.prompt, protocol="paper",
                                         extension_attempts=extension_attempts)
    started = time.perf_counter()
    try:
        result = await asyncio.wait_for(selflengthen.run(ctx, params), budget_s)
        error = None
    except asyncio.TimeoutError:  # counted as a failed gate: the run must stay under 30 minutes
        result, error = None, f"time budget: no attempt passed the gate within {budget_s / 60:g} minutes"
    except Exception as exc:  # noqa: BLE001 - a failed gate (or model fault) is a figure here
        result, error = None, f"{type(exc).__name__}: {exc}"
    rounds = [data for kind, data in events.events if kind == "progress"]
    initial_keys = sorted((k for k in store.outputs if k.startswith("initial/")), key=lambda k: int(k.split("/")[1]))
    outcome = {
        "index": item.index,
        "wall_s": round(time.perf_counter() - started, 1),
        "rounds": [{"attempt": r.get("attempt"), "candidate_words": r.get("candidate_words"), "words": r.get("words"),
                    "accepted": r.get("accepted"), "reason": r.get("reason")} for r in rounds],
        "attempts": max((r.get("attempt") or 0 for r in rounds), default=0),
        "error": error,
    }
    if initial_keys:  # the last Generator answer is the one the rounds extend (when any round ran)
        outcome["initial"] = count_words_selflengthen(store.outputs[initial_keys[-1]]["text"])
    if result is not None:
        outcome.update(initial=result["initial"]["words"], final=result["word_count"], ratio=result["gate"]["ratio"],
                       passed=result["gate"]["passed"], initial_attempts=len(result["initial"]["attempts"]))
    else:
        best = max((r["words"] for r in outcome["rounds"] if r["words"]), default=None)
        outcome.update(passed=False, final=best,
                       ratio=round(best / outcome["initial"], 3) if best and outcome.get("initial") else None)
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
            outcome = await run_one(llm, settings, item, args.extension_attempts, args.minutes_per_item * 60)
            outcomes.append(outcome)
            rounds = ", ".join(f"{r['attempt']}: {r['candidate_words']} {'ok' if r['accepted'] else r['reason']}"
                               for r in outcome["rounds"])
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
    parser.add_argument("--minutes-per-item", type=float, default=7.0,
                        help="an item still without a passing attempt then counts as failed (4 x 7 < 30 minutes)")
    parser.add_argument("--model-path", help="another GGUF file for the embedded model")
    asyncio.run(main(parser.parse_args()))
