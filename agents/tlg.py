"""TLG (Ruler's Target Length Generation): ask for one of nine lengths, score PM and FM.

The set (spec B.2): instructions from a JSONL file (default: the bundled set written for
Longform, `evaldata/tlg_instructions.jsonl`; a user's own file, e.g. OpenHermes converted,
with {"instruction"} or {"Instruction"} or {"prompt"} per line). `build_set` shuffles them
with `random.Random(seed)` (seed 10, as Ruler) and gives each of the first `limit` a target
drawn uniformly from "10".."700", ">800" with the same generator, which is what Ruler's
`random.seed(10); random.shuffle(data); random.choice(...)` does: the same instruction list
in the same order gives Ruler's set. `per_target=N` draws a balanced set instead: N items
per target, the targets shuffled over the first 9N instructions.

The CLI (`longform eval tlg`) calls:

    items = build_set(load_instructions(path), seed=10)
    report = await run_tlg(items, run_item, modes=("prompt", "controlled"))
    print(render_table(report)); write_plot(report, "plot.png"); print(summary_line(report))

where `run_item(item, mode, protocol)` runs one `chat` job (see `job_for`) and returns its
result. The modes:
- `prompt`: Ruler's baseline: the chat kind (`length_mode: prompt`) appends "The response
  should have a word count of <T> words." (">800" -> "more than 800") to the instruction,
  the one user message (`baseline_prompt` gives the same text, for the set's records);
  temperature 0 and max_tokens 2048 (Ruler's decoding for open models).
- `mlt`: `length_mode: mlt` (the chat kind places the Meta Length Token; for Ruler-trained
  models), temperature 0 and max_tokens 2048 as Ruler runs them.
- `controlled`: `length_mode: controlled`; the controller picks its own temperature, token
  budget and number of calls.
Every job gets the instruction alone as its user message, `target_words` (the target as a
number, or ">800", which the chat kind reads as "more than 800") and `counter: "runs"`.

Scoring (`agents.metrics.ruler`, spec B.3/B.4): the answer, with every MLT removed, is
counted with `agents.text.count_word_runs` (Ruler's `\\w+`) here, not taken from the job;
PM and FM are hits of the target's interval (lo < n <= hi; 0 words always misses), as
100 x hits / n per level (Level:0 {10,30,50,80}, Level:1 {150,300,500}, Level:2 {700,>800})
and pooled over every item ("All Level", a micro-average). An answer that fails the
quality filters (the chat result's `passes_filters`; a loop, a cut mid-sentence) counts as
a miss for PM and FM; `PM_length` / `FM_length` are Ruler's pure length scores (what the
paper reports), and `filter_pass` the share of answers that pass. A failed job counts as a
miss everywhere. Exact-length rate (count == target) and RMSE of the count against the
target exclude ">800" (as Ruler's extra scripts); RMSE is over the answers there are
(failed jobs left out, an empty answer counts 0 words).
"""
from __future__ import annotations

import json
import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable

from agents.evaluation import PromptSetError, local_job_runner, plot_panels, read_jsonl_items, run_arms, text_table
from agents.length_control import quality_filters
from agents.metrics.ruler import LEVELS, TLG_TARGETS, baseline_sentence, fm_hit, level_of, pm_hit, strip_mlt
from agents.settings import Settings
from agents.text import count_word_runs

MODES = ("prompt", "mlt", "controlled")
DEFAULT_MODES = ("prompt", "controlled")
DEFAULT_SEED = 10  # Ruler's
# Ruler's decoding for open models (vLLM), used for prompt and mlt.
RULER_DECODING = {"temperature": 0.0, "max_tokens": 2048}
ALL_LEVEL = "All Level"
INSTRUCTION_KEYS = ("instruction", "Instruction", "prompt")
COUNTER = "runs"

# Instructions written for Longform (see evaldata/SOURCES.md).
BUNDLED_INSTRUCTIONS = Path(__file__).resolve().parent / "evaldata" / "tlg_instructions.jsonl"


class InstructionFileError(PromptSetError):
    """The instruction file is malformed; the message lists every bad line by number."""


@dataclass(frozen=True)
class Instruction:
    line: int  # line number in the file (1-based)
    text: str


@dataclass(frozen=True)
class TLGItem:
    index: int  # position in the TLG set (0-based); Ruler's record "id"
    line: int  # the instruction's line in its file
    instruction: str
    target: str  # one of TLG_TARGETS
    level: str  # "Level:0" | "Level:1" | "Level:2"

    @property
    def prompt(self) -> str:
        return baseline_prompt(self.instruction, self.target)

    @property
    def target_words(self) -> int | str:
        return target_words(self.target)

    def record(self) -> dict[str, Any]:
        """Ruler's record, {"id", "Instruction", "TargetLength"}, plus the baseline "prompt"."""
        return {"id": self.index, "Instruction": self.instruction, "TargetLength": self.target, "prompt": self.prompt}


def baseline_prompt(instruction: str, target: str) -> str:
    """Ruler's prompt for baselines: "<instruction>\\nThe response should have a word count of
    <T> words." (">800" -> "more than 800")."""
    return f"{instruction}\n{baseline_sentence(target)}"


def target_words(target: str) -> int | str:
    """The `target_words` a chat job gets for a TLG target: the number, or ">800" as is."""
    return target if target == ">800" else int(target)


def load_instructions(path: str | Path) -> list[Instruction]:
    """Read a JSONL of instructions: one JSON object per line with a non-empty string under
    "instruction", "Instruction" or "prompt" (the first present is taken; other fields are
    ignored). Blank lines are skipped; any bad line fails the load, every problem listed by
    line number."""

    def parse(row: dict[str, Any], number: int, _index: int) -> Instruction:
        key = next((k for k in INSTRUCTION_KEYS if k in row), None)
        if key is None:
            raise ValueError('no "instruction", "Instruction" or "prompt" field')
        value = row[key]
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f'"{key}" must be a non-empty string')
        return Instruction(number, value.strip())

    return read_jsonl_items(path, InstructionFileError, "instructions", parse)


def build_set(
    instructions: list[Instruction],
    *,
    seed: int = DEFAULT_SEED,
    per_target: int | None = None,
    limit: int | None = None,
) -> list[TLGItem]:
    """The TLG set: shuffle the instructions with `random.Random(seed)`, then
    - uniform (default): the first `limit` (all when None) each get a target drawn with
      `rng.choice(TLG_TARGETS)`, in order (Ruler's draw);
    - `per_target=N`: the first 9N get the targets N times each, in an order shuffled by the
      same generator (ValueError when there are fewer than 9N instructions); `limit` then
      keeps the first `limit` items."""
    rng = random.Random(seed)
    order = list(instructions)
    rng.shuffle(order)
    if per_target is not None:
        if per_target < 1:
            raise ValueError("per_target must be at least 1")
        needed = per_target * len(TLG_TARGETS)
        if needed > len(order):
            raise ValueError(f"{per_target} per target needs {needed} instructions; the file has {len(order)}")
        targets = [t for t in TLG_TARGETS for _ in range(per_target)]
        rng.shuffle(targets)
        chosen = list(zip(order[:needed], targets))
        if limit is not None:
            chosen = chosen[:limit]
    else:
        chosen = [(ins, rng.choice(TLG_TARGETS)) for ins in order[:limit]]
    return [TLGItem(i, ins.line, ins.text, t, level_of(t)) for i, (ins, t) in enumerate(chosen)]


def target_counts(items: Iterable[TLGItem]) -> dict[str, int]:
    counts = {t: 0 for t in TLG_TARGETS}
    for item in items:
        counts[item.target] += 1
    return counts


# -- runs ----------------------------------------------------------------------------------------


def job_for(item: TLGItem, mode: str, protocol: str = "controlled",
            shared: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    """(kind, params) of one run: a `chat` job with the instruction alone as the user
    message (in prompt mode the chat kind appends Ruler's sentence), `target_words`,
    `length_mode` and the `\\w+` counter. The shared params (`-p`) override the mode's
    defaults (temperature, max_tokens), not those three."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; the modes are {', '.join(MODES)}")
    params: dict[str, Any] = {
        "messages": [{"role": "user", "content": item.instruction}],
        **(RULER_DECODING if mode in ("prompt", "mlt") else {}),
        **(shared or {}),
        "target_words": item.target_words,
        "length_mode": mode,
        "counter": COUNTER,
    }
    return "chat", params


def local_runner(
    llm,
    *,
    settings: Settings | None = None,
    params: dict[str, Any] | None = None,
) -> Callable[[TLGItem, str, str], Awaitable[dict[str, Any]]]:
    """A `run_item` that runs the chat jobs in this process (in-memory steps)."""
    return local_job_runner(llm, settings=settings, job_for=lambda item, mode, protocol: job_for(item, mode, protocol, params))


def passes_filters(result: dict[str, Any], text: str) -> bool:
    """The chat result's own verdict (`passes_filters`: no repeated 10-word n-gram, ends at
    a sentence end) when it gives one; otherwise the same filters run here on the text."""
    verdict = result.get("passes_filters")
    if isinstance(verdict, bool):
        return verdict
    return quality_filters(text, "en")["passed"]


def outcome_from_result(item: TLGItem, mode: str, result: dict[str, Any], protocol: str = "controlled") -> dict[str, Any]:
    """One run's row: the answer (MLTs removed) counted with `\\w+` and scored."""
    text = result.get("text")
    if not isinstance(text, str):
        raise ValueError("the chat result has no text")
    answer = strip_mlt(text)
    words = count_word_runs(answer)
    ok = passes_filters(result, answer)
    pm, fm = pm_hit(item.target, words), fm_hit(item.target, words)
    return {
        **asdict(item),
        "mode": mode,
        "word_count": words,
        "pm_length": pm,
        "fm_length": fm,
        "passes_filters": ok,
        "pm": pm and ok,
        "fm": fm and ok,
        "exact": item.target != ">800" and words == int(item.target),
        "strategy": result.get("strategy"),
        "calls": result.get("calls"),
        "finish_reason": result.get("finish_reason"),
        "completion_tokens": (result.get("usage") or {}).get("completion_tokens"),
        "output": answer,
        "error": None,
    }


def failed_outcome(item: TLGItem, mode: str, error: str, protocol: str = "controlled") -> dict[str, Any]:
    return {**asdict(item), "mode": mode, "word_count": 0, "pm_length": False, "fm_length": False,
            "passes_filters": False, "pm": False, "fm": False, "exact": False, "strategy": None, "calls": None,
            "finish_reason": None, "completion_tokens": None, "output": None, "error": error}


async def run_tlg(
    items: list[TLGItem],
    run_item: Callable[[TLGItem, str, str], Awaitable[dict[str, Any]]],
    modes: Iterable[str] = DEFAULT_MODES,
    *,
    concurrency: int = 16,
    on_outcome: Callable[[dict[str, Any]], Any] | None = None,
) -> dict[str, Any]:
    """Run every item in every mode (at most `concurrency` at once) and build the report; an
    item whose run raises is a failed row (a miss); cancellation propagates."""
    modes = list(modes)
    rows = await run_arms(items, run_item, modes, ["controlled"], outcome=outcome_from_result, failed=failed_outcome,
                          concurrency=concurrency, on_outcome=on_outcome)
    return build_report(rows, modes)


# -- report --------------------------------------------------------------------------------------


def _pct(hits: int, n: int) -> float | None:
    return 100.0 * hits / n if n else None


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """PM / FM (filter failures are misses), PM_length / FM_length (length only), filter_pass,
    exact and RMSE (without ">800"), all over `rows`; percentages 0..100, None when empty."""
    n = len(rows)
    done = [r for r in rows if r["error"] is None]
    numeric = [r for r in rows if r["target"] != ">800"]
    measured = [r for r in numeric if r["error"] is None]
    return {
        "n": n,
        "failed": n - len(done),
        "PM": _pct(sum(r["pm"] for r in rows), n),
        "FM": _pct(sum(r["fm"] for r in rows), n),
        "PM_length": _pct(sum(r["pm_length"] for r in rows), n),
        "FM_length": _pct(sum(r["fm_length"] for r in rows), n),
        "filter_pass": _pct(sum(r["passes_filters"] for r in rows), n),
        "exact": _pct(sum(r["exact"] for r in numeric), len(numeric)),
        "rmse": (math.sqrt(sum((r["word_count"] - int(r["target"])) ** 2 for r in measured) / len(measured))
                 if measured else None),
        "mean_words": sum(r["word_count"] for r in done) / len(done) if done else None,
    }


def build_report(outcomes: Iterable[dict[str, Any]], modes: Iterable[str] | None = None,
                 set_info: dict[str, Any] | None = None) -> dict[str, Any]:
    """{"benchmark": "TLG", "word_count", "modes": [...], "levels", "targets", "set" (`set_info`),
    "arms": {mode: {"mode", "overall" (All Level), "by_level": {"Level:0": ..}, "by_target":
    {"10": ..}}}, "items": [rows]}; see `summarize` for each summary."""
    rows = sorted(outcomes, key=lambda r: (r["mode"], r["index"]))
    order = list(modes) if modes is not None else [m for m in MODES if any(r["mode"] == m for r in rows)]
    report: dict[str, Any] = {
        "benchmark": "TLG",
        "word_count": "runs: \\w+ runs (Ruler's nltk RegexpTokenizer), every [MLT:..] removed first",
        "scoring": "PM/FM = 100 x hits / n, lo < words <= hi; answers failing the quality filters and failed "
                   "jobs are misses (PM_length/FM_length: length only, as the paper); exact and RMSE without >800",
        "modes": order,
        "levels": {name: list(members) for name, members in LEVELS.items()},
        "targets": list(TLG_TARGETS),
        "set": set_info or {},
        "arms": {},
        "items": rows,
    }
    for mode in order:
        mine = [r for r in rows if r["mode"] == mode]
        report["arms"][mode] = {
            "mode": mode,
            "overall": summarize(mine),
            "by_level": {name: summarize([r for r in mine if r["target"] in members]) for name, members in LEVELS.items()},
            "by_target": {t: summarize([r for r in mine if r["target"] == t]) for t in TLG_TARGETS},
        }
    return report


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def render_table(report: dict[str, Any]) -> str:
    """Plain-text tables: overall per mode, PM and FM by level (All Level first), and PM / FM
    by target."""
    arms = report["arms"]
    modes = list(arms)
    header = ["mode", "n", "failed", "PM", "FM", "filter pass", "PM length", "FM length", "exact", "RMSE", "mean words"]
    rows = []
    for mode in modes:
        o = arms[mode]["overall"]
        rows.append([mode, str(o["n"]), str(o["failed"]), _fmt(o["PM"]), _fmt(o["FM"]), _fmt(o["filter_pass"]),
                     _fmt(o["PM_length"]), _fmt(o["FM_length"]), _fmt(o["exact"]), _fmt(o["rmse"]),
                     _fmt(o["mean_words"], 0)])
    out = ["TLG, All Level (words: \\w+ runs; an answer failing the quality filters is a miss for PM and FM; "
           "'length' columns score the length alone, as Ruler's paper; exact and RMSE without >800)\n"
           + text_table(header, rows)]
    levels = [ALL_LEVEL, *report["levels"]]

    def level(mode: str, name: str) -> dict[str, Any]:
        return arms[mode]["overall"] if name == ALL_LEVEL else arms[mode]["by_level"][name]

    header = ["level", "n"] + [f"{m} PM" for m in modes] + [f"{m} FM" for m in modes]
    rows = [[name, str(level(modes[0], name)["n"]) if modes else "0"]
            + [_fmt(level(m, name)["PM"]) for m in modes] + [_fmt(level(m, name)["FM"]) for m in modes]
            for name in levels]
    out.append("PM and FM by level\n" + text_table(header, rows))
    header = ["target", "n"] + [f"{m} PM/FM" for m in modes] + [f"{m} words" for m in modes]
    rows = [[t, str(arms[modes[0]]["by_target"][t]["n"]) if modes else "0"]
            + [f"{_fmt(arms[m]['by_target'][t]['PM'], 0)}/{_fmt(arms[m]['by_target'][t]['FM'], 0)}" for m in modes]
            + [_fmt(arms[m]["by_target"][t]["mean_words"], 0) for m in modes]
            for t in report["targets"]]
    out.append("PM/FM and mean words by target\n" + text_table(header, rows))
    return "\n\n".join(out)


def write_plot(report: dict[str, Any], path: str | Path) -> Path:
    """Grouped bars per mode: PM and FM by level (All Level first), FM by target (.png or .svg)."""
    arms = report["arms"]
    levels = [ALL_LEVEL, *report["levels"]]

    def by_level(metric: str) -> Callable[[str, str], float | None]:
        return lambda m, g: (arms[m]["overall"] if g == ALL_LEVEL else arms[m]["by_level"][g])[metric]

    panels: list[tuple[str, list[str], Callable[[str, str], float | None]]] = [
        ("PM by level", levels, by_level("PM")),
        ("FM by level", levels, by_level("FM")),
        ("FM by target", list(report["targets"]), lambda m, t: arms[m]["by_target"][t]["FM"]),
    ]
    return plot_panels(path, panels, list(arms))


def summary(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{"prompt": {"PM": x, "FM": y, "filter_pass": z}, "controlled": {...}, ...}: All Level,
    rounded to 2 decimals."""
    def r(v: float | None) -> float | None:
        return None if v is None else round(v, 2)

    return {mode: {"PM": r(a["overall"]["PM"]), "FM": r(a["overall"]["FM"]), "filter_pass": r(a["overall"]["filter_pass"])}
            for mode, a in report["arms"].items()}


def summary_line(report: dict[str, Any]) -> str:
    """The eval command's last line: one JSON object."""
    return json.dumps(summary(report), ensure_ascii=False)


__all__ = [
    "ALL_LEVEL", "BUNDLED_INSTRUCTIONS", "DEFAULT_MODES", "DEFAULT_SEED", "Instruction", "InstructionFileError", "MODES",
    "TLGItem", "baseline_prompt", "build_report", "build_set", "failed_outcome", "job_for",
    "load_instructions", "local_runner", "outcome_from_result", "render_table", "run_tlg", "summarize", "summary",
    "summary_line", "target_counts", "target_words", "write_plot",
]
