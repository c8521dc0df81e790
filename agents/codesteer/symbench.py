"""`longform eval symbench`: run solve methods side by side on generated tasks and report
success, costs and CodeSteer's average normalized score.

    items = tasks.build_set(["game24", "multiply"], levels=[1, 2], per_level=3, seed=0)
    report = await run_symbench(items, run_item, methods=("text", "code"))
    print(render_table(report)); write_plot(report, "plot.png"); print(summary_line(report))

`run_item(item, method, protocol)` runs one `solve` job (`job_for`) and returns its result.

Scoring: a run succeeds when an answer of its last turn passes the task's exact checker: the
answer its code printed or the one its text states (the reference counts a sample correct if
either passes); `final_success` scores only the job's own final answer. Per method: success
rate (%), and per query the mean tokens (prompt + completion), model calls, code runs and wall
time. Average normalized score (spec B.2): for each task, a method's success rate divided by the
best method's on that task (x 100), averaged over tasks; a task that no method solves is left
out of the average and counted (`unsolved_tasks`). Tasks are task names, all levels pooled.
A failed job counts as unsolved and as failed.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from statistics import fmean
from typing import Any, Awaitable, Callable, Iterable

from agents.codesteer.tasks import TaskItem, check
from agents.evaluation import local_job_runner, plot_panels, run_arms, text_table
from agents.settings import Settings

DEFAULT_METHODS = ("text", "code", "code_text_sum", "steer")


def job_for(item: TaskItem, method: str, protocol: str = "controlled",
            shared: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    """A `solve` job: the question, the method and the protocol; the shared params (`-p`)
    apply to every job (steer-only params are dropped for the other methods)."""
    params = {**(shared or {}), "question": item.question, "method": method, "protocol": protocol}
    if method != "steer":
        for key in ("max_turns", "steer_model", "checker_model", "check_attempts", "self_check"):
            params.pop(key, None)
    return "solve", params


def timed(run_item: Callable[[Any, str, str], Awaitable[dict[str, Any]]]):
    """`run_item` whose result also carries its wall time ("_wall_s")."""
    async def run(item: Any, method: str, protocol: str) -> dict[str, Any]:
        started = time.monotonic()
        result = dict(await run_item(item, method, protocol))
        result["_wall_s"] = time.monotonic() - started
        return result

    return run


def local_runner(llm, *, settings: Settings | None = None, params: dict[str, Any] | None = None):
    return timed(local_job_runner(llm, settings=settings,
                                  job_for=lambda item, method, protocol: job_for(item, method, protocol, params)))


def outcome_from_result(item: TaskItem, method: str, result: dict[str, Any], protocol: str = "controlled") -> dict[str, Any]:
    candidates = list(result.get("candidates") or [])
    if result.get("answer") is not None and result["answer"] not in candidates:
        candidates.append(result["answer"])
    usage = result.get("usage") or {}
    return {
        "index": item.index, "task": item.task, "level": item.level, "checker": item.checker, "gold": item.answer,
        "method": method, "protocol": protocol, "answer": result.get("answer"), "candidates": candidates,
        "success": any(check(item, c) for c in candidates), "final_success": check(item, result.get("answer")),
        "tokens": int(usage.get("prompt_tokens", 0)) + int(usage.get("completion_tokens", 0)),
        "model_calls": int(usage.get("model_calls", 0)), "code_runs": int(usage.get("code_runs", 0)),
        "wall_s": result.get("_wall_s"), "turns": len(result.get("turns") or []), "stopped": result.get("stopped"),
        "initial_mode": result.get("initial_mode"), "modes": [t.get("mode") for t in result.get("turns") or []],
        "steering": result.get("steering") or [], "error": None,
    }


def failed_outcome(item: TaskItem, method: str, error: str, protocol: str = "controlled") -> dict[str, Any]:
    return {"index": item.index, "task": item.task, "level": item.level, "checker": item.checker, "gold": item.answer,
            "method": method, "protocol": protocol, "answer": None, "candidates": [], "success": False,
            "final_success": False, "tokens": 0, "model_calls": 0, "code_runs": 0, "wall_s": None, "turns": 0,
            "stopped": None, "initial_mode": None, "modes": [], "steering": [], "error": error}


def arm_label(method: str, protocol: str, protocols: list[str]) -> str:
    return method if len(protocols) == 1 else f"{method}/{protocol}"


def _rate(rows: list[dict[str, Any]], key: str = "success") -> float | None:
    return 100.0 * sum(bool(r[key]) for r in rows) / len(rows) if rows else None


def _mean(rows: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rows if r[key] is not None and r["error"] is None]
    return fmean(values) if values else None


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {"n": len(rows), "failed": sum(r["error"] is not None for r in rows), "success": _rate(rows),
            "final_success": _rate(rows, "final_success"), "tokens": _mean(rows, "tokens"),
            "model_calls": _mean(rows, "model_calls"), "code_runs": _mean(rows, "code_runs"),
            "wall_s": _mean(rows, "wall_s"), "turns": _mean(rows, "turns")}


def normalized_scores(rates: dict[str, dict[str, float]]) -> tuple[dict[str, float | None], list[str]]:
    """{arm: {task: success %}} -> ({arm: average normalized score}, tasks no arm solved)."""
    tasks = sorted({t for per in rates.values() for t in per})
    solved, unsolved = [], []
    for t in tasks:
        (solved if max((per.get(t) or 0.0) for per in rates.values()) > 0 else unsolved).append(t)
    scores: dict[str, float | None] = {}
    for arm, per in rates.items():
        if not solved:
            scores[arm] = None
            continue
        scores[arm] = fmean(100.0 * (per.get(t) or 0.0) / max((p.get(t) or 0.0) for p in rates.values())
                            for t in solved)
    return scores, unsolved


def build_report(outcomes: Iterable[dict[str, Any]], methods: list[str], protocols: list[str],
                 set_info: dict[str, Any] | None = None) -> dict[str, Any]:
    rows = sorted(outcomes, key=lambda r: (r["method"], r["protocol"], r["index"]))
    tasks = list(dict.fromkeys(r["task"] for r in sorted(rows, key=lambda r: r["index"])))
    levels = sorted({r["level"] for r in rows})
    arms: dict[str, Any] = {}
    for method in methods:
        for protocol in protocols:
            mine = [r for r in rows if r["method"] == method and r["protocol"] == protocol]
            arms[arm_label(method, protocol, protocols)] = {
                "method": method, "protocol": protocol, "overall": summarize(mine),
                "by_task": {t: summarize([r for r in mine if r["task"] == t]) for t in tasks},
                "by_level": {str(lv): summarize([r for r in mine if r["level"] == lv]) for lv in levels},
            }
    rates = {arm: {t: a["by_task"][t]["success"] or 0.0 for t in tasks} for arm, a in arms.items()}
    normalized, unsolved = normalized_scores(rates)
    for arm, value in normalized.items():
        arms[arm]["normalized"] = value
    return {"benchmark": "SymBench (generated)",
            "scoring": "success: an answer of the last turn (code output or text) passes the exact checker; "
                       "normalized: per task success / best method's success x 100, averaged over tasks some method "
                       "solved", "set": set_info or {}, "methods": methods, "protocols": protocols, "tasks": tasks,
            "levels": levels, "unsolved_tasks": unsolved, "arms": arms, "items": rows}


async def run_symbench(items: list[TaskItem], run_item, methods: Iterable[str] = DEFAULT_METHODS, *,
                       protocols: Iterable[str] = ("controlled",), concurrency: int = 4,
                       on_outcome: Callable[[dict[str, Any]], Any] | None = None,
                       set_info: dict[str, Any] | None = None) -> dict[str, Any]:
    methods, protocols = list(methods), list(protocols)
    rows = await run_arms(items, run_item, methods, protocols, outcome=outcome_from_result, failed=failed_outcome,
                          concurrency=concurrency, on_outcome=on_outcome)
    return build_report(rows, methods, protocols, set_info)


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def render_table(report: dict[str, Any]) -> str:
    arms = report["arms"]
    header = ["method", "n", "failed", "success %", "normalized", "final %", "tokens/q", "calls/q", "code runs/q",
              "wall s/q"]
    rows = [[m, str(a["overall"]["n"]), str(a["overall"]["failed"]), _fmt(a["overall"]["success"]),
             _fmt(a["normalized"]), _fmt(a["overall"]["final_success"]), _fmt(a["overall"]["tokens"], 0),
             _fmt(a["overall"]["model_calls"]), _fmt(a["overall"]["code_runs"]), _fmt(a["overall"]["wall_s"])]
            for m, a in arms.items()]
    unsolved = report["unsolved_tasks"]
    out = ["SymBench (generated): per method (success: code output or text answer passes the exact checker; "
           "normalized: average over tasks of success / best success x 100"
           + (f"; left out, solved by no method: {', '.join(unsolved)}" if unsolved else "") + ")\n"
           + text_table(header, rows)]
    names = list(arms)
    for title, key, groups in (("Success % by task", "by_task", report["tasks"]),
                               ("Success % by level", "by_level", [str(lv) for lv in report["levels"]])):
        header = [title.split(" by ")[1], "n"] + names
        rows = [[g, str(arms[names[0]][key][g]["n"]) if names else "0"] + [_fmt(arms[m][key][g]["success"]) for m in names]
                for g in groups]
        out.append(f"{title}\n" + text_table(header, rows))
    return "\n\n".join(out)


def write_plot(report: dict[str, Any], path: str | Path) -> Path:
    arms = report["arms"]
    panels = [
        ("Success % by task (and normalized score)", ["normalized", "overall", *report["tasks"]],
         lambda m, g: arms[m]["normalized"] if g == "normalized" else
         (arms[m]["overall"]["success"] if g == "overall" else arms[m]["by_task"][g]["success"])),
        ("Success % by level", [str(lv) for lv in report["levels"]], lambda m, g: arms[m]["by_level"][g]["success"]),
    ]
    return plot_panels(path, panels, list(arms))


def summary(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    def r(v: float | None) -> float | None:
        return None if v is None else round(v, 2)

    return {m: {"success": r(a["overall"]["success"]), "normalized": r(a["normalized"])} for m, a in report["arms"].items()}


def summary_line(report: dict[str, Any]) -> str:
    return json.dumps(summary(report), ensure_ascii=False)


def sharegpt_records(report: dict[str, Any], correct_only: bool = False) -> list[dict[str, Any]]:
    """The steering trajectories of the report's steer runs as multi-turn ShareGPT records:
    {"conversations": [{"from": "human", "value": steering prompt}, {"from": "gpt", "value":
    its reply}, ...], "task", "level", "correct", "turns"}: the data CodeSteer fine-tunes its
    steering model on (each reply is the structured decision the steerer gave)."""
    out = []
    for row in report["items"]:
        if not row["steering"] or (correct_only and not row["success"]):
            continue
        conversation = []
        for exchange in row["steering"]:
            conversation += [{"from": "human", "value": exchange["prompt"]}, {"from": "gpt", "value": exchange["reply"]}]
        out.append({"conversations": conversation, "task": row["task"], "level": row["level"],
                    "correct": row["success"], "turns": row["turns"], "protocol": row["protocol"]})
    return out
