"""LongBench-Write evaluation: load a prompt set, run it per method, report S_l / S_q.

The CLI (`longform eval longbench-write`) calls, in order:
    items = load_prompt_set(path)                      # {"prompt", "type", "length"} per line
    report = await run_prompt_set(items, run_item, methods=("agentwrite", "single"),
                                  protocols=("controlled", "paper"))
    print(render_table(report)); write_plot(report, "eval.png"); print(summary_line(report))
where `run_item(item, method, protocol)` runs one write job (through the job system or
directly) and returns its result dict (`agents.agentwrite.run`'s shape: "word_count" and
"scores"). Each (method, protocol) pair is an arm of the report, labelled "method/protocol".

The model gets only what the benchmark gives: the prompt text, whose length the job reads
from the text as for any request. `given_length` (the CLI's --given-length) passes the
annotated length as `target_words` instead.

Scoring rules: S_l per item from the job's word count against the item's annotated
`length` (not the length parsed from the prompt); a failed item counts S_l = 0 (nothing
was produced) and is counted as failed; S_q aggregates only items the judge scored (per
dimension (mean - 1) * 25), with missing verdicts counted; the answers the judge could not
rate are also listed per method and length bin with their reasons ("unjudged"), so none
drops out of S_q unseen. Length bins follow the paper: [0,500), [500,2k), [2k,4k), [4k,20k]
(longer requirements fall in the last bin).

The benchmark-neutral parts (`run_arms`, `local_job_runner`, `text_table`, `plot_panels`,
`summary_by_method`) are shared with the other benchmarks (`agents.longen`).
"""
from __future__ import annotations

import asyncio
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import fmean
from typing import Any, Awaitable, Callable, Iterable, TypeVar

from agents.settings import Settings
from agents.metrics.longbench_write import (
    QUALITY_DIMENSIONS,
    aggregate_quality,
    length_score,
    overall_score,
    unjudged_reason,
)

T = TypeVar("T")

LENGTH_BINS: tuple[tuple[str, int, float], ...] = (
    ("[0,500)", 0, 500),
    ("[500,2k)", 500, 2000),
    ("[2k,4k)", 2000, 4000),
    ("[4k,20k]", 4000, math.inf),
)
DEFAULT_METHODS = ("agentwrite", "single")
PROTOCOLS = ("controlled", "paper")
DEFAULT_PROTOCOLS = ("controlled",)


@dataclass(frozen=True)
class EvalItem:
    index: int  # position in the set (0-based)
    prompt: str
    type: str
    length: int  # required length, words / 字


# The LongBench-Write prompts shipped with the package (see evaldata/SOURCES.md).
BUNDLED_PROMPT_SET = Path(__file__).resolve().parent / "evaldata" / "longbench_write.jsonl"


class PromptSetError(ValueError):
    """The prompt set file is malformed; the message lists every bad line by number."""


def read_jsonl_items(
    path: str | Path, error: type[ValueError], what: str, parse: Callable[[dict[str, Any], int, int], T]
) -> list[T]:
    """The items of a JSONL file, `parse(row, line_number, index)` making one of each non-blank
    line (raising ValueError for a bad one). Any bad line fails the load (a benchmark with
    silently missing items would be misleading), the problems listed by line number; raised
    as `error`, as is a file that is not UTF-8 or has no `what`."""
    raw = Path(path).read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 ({exc})") from exc
    items: list[T] = []
    problems: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError("not a JSON object")
            items.append(parse(row, number, len(items)))
        except ValueError as exc:  # json.JSONDecodeError is a ValueError
            problems.append(f"line {number}: {exc}")
    if problems:
        shown = problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])
        raise error(f"{path}: " + "; ".join(shown))
    if not items:
        raise error(f"{path}: no {what}")
    return items


def load_prompt_set(path: str | Path) -> list[EvalItem]:
    """Read a LongBench-Write-format JSONL file ({"prompt", "type", "length"} per line)."""

    def parse(row: dict[str, Any], _number: int, index: int) -> EvalItem:
        prompt = row.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError('"prompt" must be a non-empty string')
        length = row.get("length")
        if isinstance(length, bool) or not isinstance(length, int) or length <= 0:
            raise ValueError('"length" must be a positive integer')
        return EvalItem(index, prompt, str(row.get("type") or "unknown"), length)

    return read_jsonl_items(path, PromptSetError, "prompts", parse)


def length_bin(length: int) -> str:
    for name, low, high in LENGTH_BINS:
        if low <= length < high:
            return name
    return LENGTH_BINS[-1][0]


def select_items(items: list[EvalItem], bins: Iterable[str] = (), per_bin: int | None = None) -> list[EvalItem]:
    """The items in `bins` (all when none is named), at most `per_bin` of each bin, in order."""
    names = [b[0] for b in LENGTH_BINS]
    wanted = list(bins) or names
    unknown = [b for b in wanted if b not in names]
    if unknown:
        raise ValueError(f"unknown length bin {unknown[0]!r}; the bins are {', '.join(names)}")
    taken: dict[str, int] = {}
    out = []
    for item in items:
        b = length_bin(item.length)
        if b in wanted and (per_bin is None or taken.get(b, 0) < per_bin):
            taken[b] = taken.get(b, 0) + 1
            out.append(item)
    return out


def arm_label(method: str, protocol: str) -> str:
    return f"{method}/{protocol}"


def outcome_from_result(item: EvalItem, method: str, result: dict[str, Any], protocol: str = "controlled") -> dict[str, Any]:
    """One item's row. S_l is recomputed against the annotated length."""
    words = int(result["word_count"])
    scores = result.get("scores") or {}
    quality = scores.get("quality") if scores.get("quality_status") == "scored" else None
    return {
        **asdict(item),
        "method": method,
        "protocol": protocol,
        "target_words": result.get("target_words"),
        "target_source": result.get("target_source"),
        "word_count": words,
        "S_l": length_score(words, item.length),
        "quality": quality,
        "quality_status": scores.get("quality_status", "not_configured"),
        "quality_error": scores.get("quality_error"),
        "error": None,
    }


def failed_outcome(item: EvalItem, method: str, error: str, protocol: str = "controlled") -> dict[str, Any]:
    return {**asdict(item), "method": method, "protocol": protocol, "target_words": None, "target_source": None,
            "word_count": 0, "S_l": 0.0, "quality": None, "quality_status": "failed", "error": error}


def _summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    judged = [r for r in rows if r["quality_status"] in ("scored", "missing")]
    quality = aggregate_quality(r["quality"] for r in judged)
    s_l = fmean(r["S_l"] for r in rows) if rows else None
    return {
        "n": len(rows),
        "failed": sum(1 for r in rows if r["error"] is not None),
        "S_l": s_l,
        "S_q": quality["S_q"],
        "S": overall_score(s_l, quality["S_q"]),
        "quality_dimensions": quality["dimensions"],
        "judged": quality["scored"],
        "missing": quality["missing"],
        "mean_length_ratio": fmean(r["word_count"] / r["length"] for r in rows) if rows else None,
    }


def _unjudged(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """{bin: {"count": n, "reasons": {reason: n}}} of the answers the judge gave no verdict
    (bins without any are left out)."""
    out: dict[str, Any] = {}
    for r in rows:
        if r["quality_status"] != "missing":
            continue
        entry = out.setdefault(length_bin(r["length"]), {"count": 0, "reasons": {}})
        entry["count"] += 1
        reason = unjudged_reason(r.get("quality_error"))
        entry["reasons"][reason] = entry["reasons"].get(reason, 0) + 1
    return {b: out[b] for b, _, _ in LENGTH_BINS if b in out}


def build_report(
    outcomes: Iterable[dict[str, Any]],
    methods: Iterable[str] | None = None,
    protocols: Iterable[str] | None = None,
    given_length: bool = False,
) -> dict[str, Any]:
    """{"given_length", "protocols", "methods": {"method/protocol": {"method", "protocol",
    "overall", "by_length": {bin: ...}, "by_type": {type: ...}, "unjudged": {bin: {"count",
    "reasons": {reason: count}}}}}, "items": [rows]}; each summary has n, failed, S_l, S_q, S,
    judged, missing, ..."""
    rows = sorted(outcomes, key=lambda r: (r["method"], r["protocol"], r["index"]))
    order = list(methods) if methods is not None else sorted({r["method"] for r in rows})
    protocol_order = list(protocols) if protocols is not None else sorted({r["protocol"] for r in rows})
    report: dict[str, Any] = {
        "bins": [b[0] for b in LENGTH_BINS],
        "given_length": given_length,
        "protocols": protocol_order,
        "methods": {},
        "items": rows,
    }
    for method, protocol in ((m, p) for m in order for p in protocol_order):
        mine = [r for r in rows if r["method"] == method and r["protocol"] == protocol]
        types = sorted({r["type"] for r in mine})
        report["methods"][arm_label(method, protocol)] = {
            "method": method,
            "protocol": protocol,
            "overall": _summarize(mine),
            "by_length": {b: _summarize([r for r in mine if length_bin(r["length"]) == b]) for b, _, _ in LENGTH_BINS},
            "by_type": {t: _summarize([r for r in mine if r["type"] == t]) for t in types},
            "unjudged": _unjudged(mine),
        }
    return report


async def run_arms(
    items: list[Any],
    run_item: Callable[[Any, str, str], Awaitable[dict[str, Any]]],
    methods: Iterable[str],
    protocols: Iterable[str],
    *,
    outcome: Callable[[Any, str, dict[str, Any], str], dict[str, Any]],
    failed: Callable[[Any, str, str, str], dict[str, Any]],
    concurrency: int = 16,
    on_outcome: Callable[[dict[str, Any]], Any] | None = None,
) -> list[dict[str, Any]]:
    """Run every item with every method under every protocol (at most `concurrency` at once);
    the rows, one per run: `outcome(item, method, result, protocol)`, or `failed(item, method,
    error, protocol)` for a run that raised an Exception (cancellation and other
    BaseExceptions propagate). Shared by every benchmark's runner."""
    methods, protocols = list(methods), list(protocols)
    limit = asyncio.Semaphore(max(1, concurrency))

    async def one(item: Any, method: str, protocol: str) -> dict[str, Any]:
        async with limit:
            try:
                row = outcome(item, method, await run_item(item, method, protocol), protocol)
            except Exception as exc:  # noqa: BLE001 - one failed item must not sink the evaluation
                row = failed(item, method, f"{type(exc).__name__}: {exc}", protocol)
        if on_outcome is not None:
            on_outcome(row)
        return row

    return list(await asyncio.gather(*(one(item, m, p) for m in methods for p in protocols for item in items)))


async def run_prompt_set(
    items: list[EvalItem],
    run_item: Callable[[EvalItem, str, str], Awaitable[dict[str, Any]]],
    methods: Iterable[str] = DEFAULT_METHODS,
    *,
    protocols: Iterable[str] = DEFAULT_PROTOCOLS,
    given_length: bool = False,
    concurrency: int = 16,
    on_outcome: Callable[[dict[str, Any]], Any] | None = None,
) -> dict[str, Any]:
    """Run every item with every method under every protocol (at most `concurrency` at once)
    and build the report. `given_length` is only recorded here: `run_item` decides what the
    job gets. An item whose run raises is recorded as failed (S_l 0); cancellation propagates."""
    methods, protocols = list(methods), list(protocols)
    outcomes = await run_arms(items, run_item, methods, protocols, outcome=outcome_from_result, failed=failed_outcome,
                              concurrency=concurrency, on_outcome=on_outcome)
    return build_report(outcomes, methods, protocols, given_length)


def job_params(item: EvalItem, method: str, protocol: str, given_length: bool, shared: dict[str, Any] | None) -> dict[str, Any]:
    """The write params of one run: the prompt as the benchmark gives it; the annotated
    length only with `given_length`."""
    params = {**(shared or {}), "instruction": item.prompt, "method": method, "protocol": protocol}
    if given_length:
        params["target_words"] = item.length
    return params


def local_runner(
    llm,
    *,
    judge=None,
    settings: Settings | None = None,
    write_params: dict[str, Any] | None = None,
    given_length: bool = False,
) -> Callable[[EvalItem, str, str], Awaitable[dict[str, Any]]]:
    """A `run_item` that runs write jobs in this process with in-memory steps (tests,
    notebooks, an offline CLI); see `job_params` for what each job gets. The shared
    `write_params` (temperature, models, judge, ...) apply to every item."""
    return local_job_runner(
        llm, judge=judge, settings=settings,
        job_for=lambda item, method, protocol: ("write", job_params(item, method, protocol, given_length, write_params)),
    )


def local_job_runner(
    llm,
    *,
    job_for: Callable[[Any, str, str], tuple[str, dict[str, Any]]],
    judge=None,
    settings: Settings | None = None,
) -> Callable[[Any, str, str], Awaitable[dict[str, Any]]]:
    """A `run_item` that runs jobs of any kind in this process with in-memory steps:
    `job_for(item, method, protocol)` gives the (kind, params) of a run; the params are
    validated and the result checked by the kind, as the worker does, and the result comes
    back as the API would return it."""
    from agents.context import JobContext, MemoryStepStore
    from agents.kinds import get_kind, validate_params

    settings = settings or Settings()

    async def run_item(item: Any, method: str, protocol: str) -> dict[str, Any]:
        kind_name, params = job_for(item, method, protocol)
        kind = get_kind(kind_name)
        model = validate_params(kind_name, params, settings)
        ctx = JobContext(llm, store=MemoryStepStore(), settings=settings, judge=judge, kind_version=kind.version,
                         job_id=f"eval-{method}-{protocol}-{item.index}")
        return kind.validate_result(await kind.run(ctx, model)).model_dump(mode="json")

    return run_item


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def text_table(header: list[str], rows: list[list[str]]) -> str:
    """Aligned plain-text columns: the first left-aligned, the others right-aligned."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    lines = ["  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render_table(report: dict[str, Any]) -> str:
    """Plain-text tables: overall per method, S_l (and S_q) by length bin and by type."""
    methods = list(report["methods"])
    per = report["methods"]
    judged = any(per[m]["overall"]["judged"] for m in methods)
    out = []
    header = ["method/protocol", "n", "failed", "S_l"] + (["S_q", "S", "judged", "missing"] if judged else []) + ["words/len"]
    rows = []
    for m in methods:
        o = per[m]["overall"]
        row = [m, str(o["n"]), str(o["failed"]), _fmt(o["S_l"])]
        if judged:
            row += [_fmt(o["S_q"]), _fmt(o["S"]), str(o["judged"]), str(o["missing"])]
        row.append("-" if o["mean_length_ratio"] is None else f"{o['mean_length_ratio']:.2f}")
        rows.append(row)
    lengths = "annotated length given as target_words" if report.get("given_length") else "prompt text only"
    out.append(f"LongBench-Write: overall (arms are method/protocol; the model got: {lengths})\n"
               + text_table(header, rows))
    unjudged = [f"  {m} {b}: {u['count']} ({', '.join(f'{why}: {n}' for why, n in u['reasons'].items())})"
                for m in methods for b, u in per[m].get("unjudged", {}).items()]
    if unjudged:
        out.append("Not judged (left out of S_q)\n" + "\n".join(unjudged))

    metrics = ["S_l", "S_q"] if judged else ["S_l"]
    for metric in metrics:
        header = ["length bin", "n"] + methods
        rows = [[b, str(per[methods[0]]["by_length"][b]["n"])] + [_fmt(per[m]["by_length"][b][metric]) for m in methods]
                for b in report["bins"]]
        out.append(f"{metric} by required length\n" + text_table(header, rows))
        types = sorted({t for m in methods for t in per[m]["by_type"]})
        header = ["type", "n"] + methods
        rows = [[t, str(max(per[m]["by_type"].get(t, {"n": 0})["n"] for m in methods))]
                + [_fmt(per[m]["by_type"].get(t, {}).get(metric)) for m in methods] for t in types]
        out.append(f"{metric} by type\n" + text_table(header, rows))
    return "\n\n".join(out)


def summary(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Overall figures per method, the protocol a level below:
    {"agentwrite": {"protocol": "controlled", "S_l": .., "S_q": .., "S": .., "paper": {"S_l": .., ...}}, ...}.
    A method's own keys hold the figures of its main protocol (controlled when it ran, else
    the first that did), named by "protocol"; every other protocol's figures nest under its
    name."""
    def figures(o: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"S_l": None if o["S_l"] is None else round(o["S_l"], 2)}
        if o["judged"]:
            out["S_q"] = None if o["S_q"] is None else round(o["S_q"], 2)
            out["S"] = None if o["S"] is None else round(o["S"], 2)
        return out

    return summary_by_method(report, figures)


def summary_by_method(report: dict[str, Any], figures: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """{method: {"protocol": main, **figures(main arm's overall), other_protocol: figures(..)}}
    over a report's arms ("methods": {label: {"method", "protocol", "overall"}}): the main
    protocol is controlled when it ran, else the first of report["protocols"]."""
    protocols = report["protocols"]
    main = "controlled" if "controlled" in protocols else protocols[0]
    out: dict[str, dict[str, Any]] = {}
    for parts in report["methods"].values():
        entry = out.setdefault(parts["method"], {})
        if parts["protocol"] == main:
            entry.update({"protocol": main, **figures(parts["overall"])})
        else:
            entry[parts["protocol"]] = figures(parts["overall"])
    return out


def summary_line(report: dict[str, Any]) -> str:
    """The eval command's last line: one JSON object."""
    return json.dumps(summary(report), ensure_ascii=False)


def write_plot(report: dict[str, Any], path: str | Path) -> Path:
    """Grouped bars per method: S_l (and S_q when judged) overall and by length bin, and S_l
    by type. The format follows the suffix: .png or .svg."""
    methods = list(report["methods"])
    per = report["methods"]
    judged = any(per[m]["overall"]["judged"] for m in methods)
    panels: list[tuple[str, list[str], Callable[[str, str], float | None]]] = []
    bins = ["overall", *report["bins"]]

    def by_bin(metric: str) -> Callable[[str, str], float | None]:
        return lambda m, b: per[m]["overall"][metric] if b == "overall" else per[m]["by_length"][b][metric]

    panels.append(("S_l by required length", bins, by_bin("S_l")))
    if judged:
        panels.append(("S_q by required length", bins, by_bin("S_q")))
    types = sorted({t for m in methods for t in per[m]["by_type"]})
    panels.append(("S_l by type", types, lambda m, t: per[m]["by_type"].get(t, {}).get("S_l")))
    return plot_panels(path, panels, methods)


def plot_panels(
    path: str | Path,
    panels: list[tuple[str, list[str], Callable[[str, str], float | None]]],
    methods: list[str],
    *,
    ymax: float = 110,
    fmt: Callable[[float | None], str] = _fmt,
) -> Path:
    """One bar chart per panel (title, groups, value(method, group)), a bar per method in each
    group, labelled with `fmt`. The format follows the suffix: .png or .svg."""
    path = Path(path)
    if path.suffix.lower() not in (".png", ".svg"):
        raise ValueError(f"plot file must end in .png or .svg, got {path.name!r}")
    import matplotlib

    matplotlib.use("Agg")  # no display; also safe in worker threads
    import matplotlib.pyplot as plt

    widest = max((len(groups) for _, groups, _ in panels), default=1)
    fig, axes = plt.subplots(len(panels), 1, figsize=(max(8, 0.9 * widest + 3), 3.6 * len(panels)))
    axes = list(axes) if len(panels) > 1 else [axes]
    width = 0.8 / max(1, len(methods))
    for ax, (title, groups, value) in zip(axes, panels):
        for k, m in enumerate(methods):
            xs = [g + (k - (len(methods) - 1) / 2) * width for g in range(len(groups))]
            ys = [value(m, g) or 0.0 for g in groups]
            bars = ax.bar(xs, ys, width, label=m)
            ax.bar_label(bars, labels=[fmt(value(m, g)) for g in groups], fontsize=7, padding=1)
        ax.set_title(title)
        ax.set_ylim(0, ymax)
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels([g if len(g) <= 18 else g[:17] + "…" for g in groups], rotation=20 if len(groups) > 5 else 0,
                           ha="right" if len(groups) > 5 else "center", fontsize=8)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format=path.suffix[1:].lower())
    plt.close(fig)
    return path


__all__ = [
    "EvalItem", "PromptSetError", "LENGTH_BINS", "DEFAULT_METHODS", "QUALITY_DIMENSIONS", "load_prompt_set",
    "length_bin", "local_runner", "outcome_from_result", "failed_outcome", "build_report", "run_prompt_set", "render_table",
    "summary", "summary_line", "write_plot", "run_arms", "local_job_runner", "text_table", "summary_by_method",
    "plot_panels",
]
