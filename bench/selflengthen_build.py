"""Self-Lengthen dataset build throughput: a `dataset` job with recipe `selflengthen` (100
instructions self-instructed from 10 seed prompts, two Generator answers each, length-biased
sampling, two `lengthen` children per kept answer under protocol paper, sampling again, length
demands) against the fake server in vLLM timing mode (max_num_seqs=64, 2 ms per token,
priority scheduling), through the real service (`longform serve`: REST, SQLite, the embedded
worker).

Prints the self-instruct, filter and sampling counts, checks every export format (record
shapes, counts as the stats say, ext_sft prompts, length demands the responses meet), then the
generation tokens/s the fake server produced during the build over its capacity (target >=
0.85; measured as bench/dataset_build.py does, with bench/service.py).
Last line: {"utilization": ..., "items": ...}

The figures are plumbing: the fake's lengths are its own constants (answers of a few hundred
words, a judge that says yes at random), so the length-demand window is lowered to 300-8,000
words here (the reference's 2,000-8,000 would leave no pair in it).

Run: .venv/bin/python bench/selflengthen_build.py [--items 100]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agents.selflengthen_build import FORMATS, states_constraint  # noqa: E402
from agents.text import count_words_selflengthen  # noqa: E402
from bench.service import run_timed, timed_service, utilization  # noqa: E402

SEEDS = [
    "Write an essay of several sections on how the invention of the printing press changed the way Europeans learned, argued and worshipped.",
    "Write a short story about a lighthouse keeper on a remote island who receives a letter addressed to someone who died fifty years ago.",
    "Write a detailed report for a city council on the costs and benefits of turning three car lanes of the main avenue into a tram line.",
    "Write a practical guide for first-time beekeepers in a city: choosing a site, buying a colony, the first year of inspections and the first harvest.",
    "Write a feature article about the people who repair church organs, the history of the craft and why so few apprentices learn it today.",
    "Write a long letter from a retired ship's engineer to his granddaughter explaining what forty years at sea taught him about patience.",
    "Write a history of the bicycle from the draisine to the carbon racing frame, with the social changes each design brought.",
    "Write a business plan for a small bakery that wants to sell sourdough bread by subscription in a town of twenty thousand people.",
    "Write a travel narrative of a week on night trains across Europe, city by city, with the people met in the sleeping cars.",
    "Write an explainer on how vaccines are tested, from the first laboratory studies to the large trials and the monitoring after approval.",
]


def check_exports(client, dataset_id: str, stats: dict[str, Any]) -> dict[str, int]:
    """Every format's records have their shape and the counts the stats give; {format: records}."""
    records = {}
    for fmt in FORMATS:
        response = client.get(f"/v1/datasets/{dataset_id}/export", params={"format": fmt})
        response.raise_for_status()
        rows = [json.loads(line) for line in response.text.splitlines() if line.strip()]
        for row in rows:
            if fmt == "long":
                ok = set(row) == {"query", "response"} and row["query"].strip() and row["response"].strip()
            elif fmt == "sharegpt":
                turns = row.get("conversations") or []
                ok = [t.get("from") for t in turns] == ["human", "gpt"] and all(t["value"].strip() for t in turns)
            else:
                ok = set(row) == {"instruction", "input", "output"} and row["input"] == "" and row["output"].strip()
                if fmt == "ext_sft":
                    ok = ok and "Original outline:" in row["instruction"]  # the Extender's prompt (paper's file)
            if not ok:
                raise SystemExit(f"{fmt}: a malformed record: {json.dumps(row)[:300]}")
        if len(rows) != stats["formats"][fmt]:
            raise SystemExit(f"{fmt}: {len(rows)} records, the stats say {stats['formats'][fmt]}")
        records[fmt] = rows
    long_rows = {(r["query"], r["response"]) for r in records["long"]}
    if {(r["conversations"][0]["value"], r["conversations"][1]["value"]) for r in records["sharegpt"]} != long_rows:
        raise SystemExit("sharegpt and long hold different pairs")
    if [r["output"] for r in records["gen_sft"]] != [r["output"] for r in records["ext_sft"]]:
        raise SystemExit("gen_sft and ext_sft hold different extended answers")
    return {fmt: len(rows) for fmt, rows in records.items()}


def check_demands(client, dataset_id: str, long_rows: int) -> dict[str, int]:
    """Every length demand's query states its numbers and its response meets the constraint."""
    steps = client.get(f"/v1/jobs/{dataset_id}/steps", params={"with_output": "true"}).json()["items"]
    demands = [s["output"] for s in steps if s["key"].startswith("demand/") and s["status"] == "succeeded"]
    met = 0
    for d in demands:
        words, numbers = d["words"], d["numbers"]
        kind, n = d["type"], numbers[0]
        inside = (abs(words - n) <= d["unit"] / 2 if kind == "about" else numbers[0] <= words <= numbers[1]
                  if kind == "range" else words >= n if kind == "above" else words <= n)
        if not (inside and states_constraint(d["query"], numbers)):
            raise SystemExit(f"a length demand the response does not meet or the query does not state: {d}")
        met += 1
    if met != long_rows:
        raise SystemExit(f"{met} length demands for {long_rows} long records")
    return {"demands": met}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100)
    args = parser.parse_args()
    body = {"recipe": "selflengthen", "seeds": SEEDS, "count": args.items, "protocol": "paper",
            "length_demands": True, "selflengthen": {"length_demand_words": {"min": 300, "max": 8000}}}
    # Every lengthen child runs at once (about 2.4 per instruction), each one call at a time.
    with timed_service("selflengthen-bench", worker_concurrency=3 * args.items + 8) as (fake, client):
        state, elapsed, server = run_timed(fake, client, "/v1/datasets", body)
        if state["status"] != "succeeded":
            raise SystemExit(f"dataset job {state['status']}: {state.get('error')}")
        stats = state["result"]["stats"]
        counts = check_exports(client, state["id"], stats)
        demands = check_demands(client, state["id"], counts["long"])
    measured = utilization(server, elapsed)
    si, initial, ext, sampling = stats["self_instruct"], stats["initial"], stats["extension"], stats["sampling"]
    print(f"self-instruct: {si['accepted']} instructions of {si['candidates']} candidates ({si['judge_calls']} judged; "
          f"rejected {json.dumps(si['rejected'])}; {si['surplus']} decided and {si['unused']} still in flight after the "
          f"last one needed)")
    print(f"initial answers: {initial['answered']} of {initial['requested']} passed the filters after "
          f"{initial['regenerations']} regenerations (rejected by filter {json.dumps(initial['rejected_by_filter'])}; "
          f"{initial['failed']} gave up)")
    print(f"drop_short initial: kept {sampling['initial']['kept']} of {sampling['initial']['candidates']} "
          f"(dropped {sampling['initial']['dropped']})")
    print(f"extension: {ext['children']} lengthen children, {ext['passed_gate']} passed the 1.2x gate, "
          f"{ext['failed_gate']} failed it, {ext['failed']} failed otherwise; {ext['accepted_candidates']} of "
          f"{ext['micro_iterations']} candidates accepted, rejected {json.dumps(ext['rejected_candidates'])} "
          f"(+{ext['rejected_candidates_reason_unrecorded']} in children that failed the gate)")
    print(f"drop_short extended: kept {sampling['extended']['kept']} of {sampling['extended']['candidates']} "
          f"(dropped {sampling['extended']['dropped']})")
    ld = stats["length_demands"]
    print(f"length demands: {ld['demands']} of {ld['pairs']} pairs ({ld['out_of_window']} outside {ld['window']}), "
          f"types {json.dumps(ld['types'])}, {ld['rewritten_by_model']} rewritten by the model, {ld['appended']} "
          f"appended; all {demands['demands']} met by their response")
    print(f"exports (valid): {json.dumps(counts)}")
    print(f"words: initial mean {stats['words']['initial']['mean']}, extended mean {stats['words']['extended']['mean']}")
    print(f"{args.items} items in {elapsed:.1f} s, {measured['model_calls']} model calls; generation "
          f"{measured['tokens_per_s']:,.0f} tok/s of {measured['capacity_tokens_per_s']:,.0f} capacity: "
          f"utilization {measured['utilization']:.3f} (target >= 0.85)")
    print(json.dumps({**measured, "items": args.items, "kept": stats["kept"], "formats": counts}))
    print(json.dumps({"utilization": measured["utilization"], "items": args.items}))


if __name__ == "__main__":
    main()
