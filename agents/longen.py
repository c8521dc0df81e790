"""LonGen evaluation: length following of long answers (Self-Lengthen's benchmark).

A LonGen-format file is JSONL with, per line, `query` (the request, whose length demand is
in its text), `type` (about / range / above / below), `constraint` (the demand as text:
"about 3000 words", "2000字至3000字", "小于四千字"), `language` and `range` (a label such as
"2-4k"). Other fields are ignored. The CLI (`longform eval longen FILE.jsonl`) calls:

    items = load_longen(path)
    report = await run_longen(items, run_item, methods=("single", "agentwrite", "lengthen"))
    print(render_table(report)); write_plot(report, "plot.png"); print(summary_line(report))

where `run_item(item, method, protocol)` runs one job (see `job_for`) and returns its result.
Each job gets only the query, as the benchmark gives it: its length is read from the text
as for any request. `single` and `agentwrite` are `write` jobs (quality judge off: LonGen's
length score does not use it); `lengthen` is a `lengthen` job (Self-Lengthen).

Scoring (`agents.metrics.longen`): the job's text is counted with Self-Lengthen's counter
(`agents.text.count_words_selflengthen`, not the job's own word_count) and scored 0..1
against the constraint's interval; a failed run scores 0 and is counted as failed.
Averages are micro-averages over items, per type, per range, per language and overall.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import fmean
from typing import Any, Awaitable, Callable, Iterable

from agents.evaluation import (
    PromptSetError,
    read_jsonl_items,
    arm_label,
    local_job_runner,
    plot_panels,
    run_arms,
    summary_by_method,
    text_table,
)
from agents.length_target import find_numbers
from agents.metrics.longen import CONSTRAINT_TYPES, ConstraintError, constraint_interval, length_following, position
from agents.settings import Settings
from agents.text import count_words_selflengthen, detect_language

METHODS = ("single", "agentwrite", "lengthen")
METHOD_KINDS = {"single": "write", "agentwrite": "write", "lengthen": "lengthen"}
DEFAULT_PROTOCOLS = ("controlled",)

# A small LonGen-format sample written for Longform (see evaldata/SOURCES.md); LonGen itself
# is not bundled.
BUNDLED_SAMPLE = Path(__file__).resolve().parent / "evaldata" / "longen_sample.jsonl"


@dataclass(frozen=True)
class LonGenItem:
    index: int  # position in the file (0-based, blank lines skipped)
    query: str
    language: str
    type: str  # about | range | above | below
    constraint: str
    range: str  # the file's length band label ("2-4k"), or one derived from the constraint
    low: float  # the interval [low, high] the answer's length should fall in
    high: float


class LonGenFileError(PromptSetError):
    """The LonGen file is malformed; the message lists every bad line by number."""


def derived_range(kind: str, low: float, high: float) -> str:
    """A 2k-wide band label ("2-4k") for a line without `range`, placed as LonGen places its
    items: by the stated length (about, above), the lower bound (range) or just under the
    upper bound (below)."""
    stated = {"about": (low + high) / 2, "range": low, "above": low, "below": high - 1}[kind]
    k = int(max(0, stated) // 2000) * 2
    return f"{k}-{k + 2}k"


def _text_field(row: dict[str, Any], name: str, required: bool = True) -> str | None:
    value = row.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f'"{name}" must be a non-empty string')
    return value.strip()


def load_longen(path: str | Path) -> list[LonGenItem]:
    """Read a LonGen-format JSONL file. Any bad line fails the load, with every problem
    listed by line number. `language` defaults to the query's script, `range` to a band
    derived from the constraint."""

    def parse(row: dict[str, Any], _number: int, index: int) -> LonGenItem:
        query = _text_field(row, "query")
        kind = _text_field(row, "type")
        if kind not in CONSTRAINT_TYPES:
            raise ValueError(f'"type" must be one of {", ".join(CONSTRAINT_TYPES)}, got {kind!r}')
        constraint = _text_field(row, "constraint")
        try:
            low, high = constraint_interval(kind, constraint)
        except ConstraintError as exc:
            raise ValueError(f'"constraint": {exc}') from None
        language = _text_field(row, "language", required=False) or detect_language(query)
        band = _text_field(row, "range", required=False) or derived_range(kind, low, high)
        return LonGenItem(index, query, language, kind, constraint, band, low, high)

    return read_jsonl_items(path, LonGenFileError, "queries", parse)


# -- runs ----------------------------------------------------------------------------------------


def job_for(item: LonGenItem, method: str, protocol: str, shared: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    """(kind, params) of one run: the query alone as the instruction, plus the shared params
    (`-p`); write jobs skip the quality judge unless the shared params ask for it."""
    if method not in METHOD_KINDS:
        raise ValueError(f"unknown method {method!r}; the methods are {', '.join(METHODS)}")
    params: dict[str, Any] = {**(shared or {}), "instruction": item.query, "protocol": protocol}
    if METHOD_KINDS[method] == "write":
        params = {"judge": False, **params, "method": method}
    return METHOD_KINDS[method], params


def local_runner(
    llm,
    *,
    judge=None,
    settings: Settings | None = None,
    params: dict[str, Any] | None = None,
) -> Callable[[LonGenItem, str, str], Awaitable[dict[str, Any]]]:
    """A `run_item` that runs the jobs in this process (in-memory steps)."""
    return local_job_runner(llm, judge=judge, settings=settings,
                            job_for=lambda item, method, protocol: job_for(item, method, protocol, params))


def outcome_from_result(item: LonGenItem, method: str, result: dict[str, Any], protocol: str = "controlled",
                        text_field: str = "text") -> dict[str, Any]:
    """One run's row: the answer counted with Self-Lengthen's counter and scored."""
    text = result.get(text_field)
    if not isinstance(text, str):
        raise ValueError(f"the {METHOD_KINDS.get(method, method)} result has no text in {text_field!r}")
    words = count_words_selflengthen(text)
    return {
        **asdict(item),
        "method": method,
        "protocol": protocol,
        "word_count": words,
        "job_word_count": result.get("word_count"),  # the job's own count (LongWriter's), for reference
        "score": length_following(words, item.low, item.high),
        "position": position(words, item.low, item.high),
        "error": None,
    }


def failed_outcome(item: LonGenItem, method: str, error: str, protocol: str = "controlled") -> dict[str, Any]:
    return {**asdict(item), "method": method, "protocol": protocol, "word_count": 0, "job_word_count": None,
            "score": 0.0, "position": "failed", "error": error}


async def run_longen(
    items: list[LonGenItem],
    run_item: Callable[[LonGenItem, str, str], Awaitable[dict[str, Any]]],
    methods: Iterable[str] = METHODS,
    *,
    protocols: Iterable[str] = DEFAULT_PROTOCOLS,
    text_fields: dict[str, str] | None = None,
    concurrency: int = 16,
    on_outcome: Callable[[dict[str, Any]], Any] | None = None,
) -> dict[str, Any]:
    """Run every item with every method under every protocol and build the report.
    `text_fields` names the result field holding the answer per kind (default "text")."""
    methods, protocols = list(methods), list(protocols)
    fields = text_fields or {}

    def outcome(item: LonGenItem, method: str, result: dict[str, Any], protocol: str) -> dict[str, Any]:
        return outcome_from_result(item, method, result, protocol, fields.get(METHOD_KINDS.get(method, ""), "text"))

    rows = await run_arms(items, run_item, methods, protocols, outcome=outcome, failed=failed_outcome,
                          concurrency=concurrency, on_outcome=on_outcome)
    return build_report(rows, methods, protocols)


# -- report --------------------------------------------------------------------------------------


def _summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    done = [r for r in rows if r["error"] is None]
    return {
        "n": len(rows),
        "failed": len(rows) - len(done),
        "length_following": fmean(r["score"] for r in rows) if rows else None,
        "below": sum(1 for r in done if r["position"] == "below"),
        "inside": sum(1 for r in done if r["position"] == "inside"),
        "above": sum(1 for r in done if r["position"] == "above"),
        "mean_words": fmean(r["word_count"] for r in done) if done else None,
    }


def _band_key(band: str) -> tuple[float, str]:
    numbers = find_numbers(band)
    return (numbers[0] if numbers else float("inf"), band)


def build_report(
    outcomes: Iterable[dict[str, Any]],
    methods: Iterable[str] | None = None,
    protocols: Iterable[str] | None = None,
) -> dict[str, Any]:
    """{"benchmark": "LonGen", "scale", "word_count", "protocols", "types", "ranges",
    "languages", "methods": {"method/protocol": {"method", "protocol", "overall",
    "by_type": {..}, "by_range": {..}, "by_language": {..}}}, "items": [rows]}; each summary
    has n, failed, length_following (0..1), below / inside / above (answers per side of the
    interval) and mean_words."""
    rows = sorted(outcomes, key=lambda r: (r["method"], r["protocol"], r["index"]))
    order = list(methods) if methods is not None else sorted({r["method"] for r in rows})
    protocol_order = list(protocols) if protocols is not None else sorted({r["protocol"] for r in rows})
    types = [t for t in CONSTRAINT_TYPES if any(r["type"] == t for r in rows)]
    bands = sorted({r["range"] for r in rows}, key=_band_key)
    languages = sorted({r["language"] for r in rows})
    report: dict[str, Any] = {
        "benchmark": "LonGen",
        "scale": "0..1",
        "word_count": "selflengthen (CJK characters, CJK punctuation and full-width forms one each, plus whitespace tokens)",
        "protocols": protocol_order,
        "types": types,
        "ranges": bands,
        "languages": languages,
        "methods": {},
        "items": rows,
    }
    for method, protocol in ((m, p) for m in order for p in protocol_order):
        mine = [r for r in rows if r["method"] == method and r["protocol"] == protocol]
        report["methods"][arm_label(method, protocol)] = {
            "method": method,
            "protocol": protocol,
            "overall": _summarize(mine),
            "by_type": {t: _summarize([r for r in mine if r["type"] == t]) for t in types},
            "by_range": {b: _summarize([r for r in mine if r["range"] == b]) for b in bands},
            "by_language": {lang: _summarize([r for r in mine if r["language"] == lang]) for lang in languages},
        }
    return report


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


GROUPINGS = (("type", "by_type", "types"), ("range", "by_range", "ranges"), ("language", "by_language", "languages"))


def render_table(report: dict[str, Any]) -> str:
    """Plain-text tables: overall per arm, then the score by type, by range and by language."""
    arms = list(report["methods"])
    per = report["methods"]
    header = ["method/protocol", "n", "failed", "score", "below", "inside", "above", "mean words"]
    rows = []
    for arm in arms:
        o = per[arm]["overall"]
        rows.append([arm, str(o["n"]), str(o["failed"]), _fmt(o["length_following"]), str(o["below"]),
                     str(o["inside"]), str(o["above"]), "-" if o["mean_words"] is None else f"{o['mean_words']:.0f}"])
    out = ["LonGen length following (0..1; words by Self-Lengthen's counter; the model got the query only)\n"
           + text_table(header, rows)]
    for name, key, groups in GROUPINGS:
        header = [name, "n"] + arms
        rows = [[g, str(max(per[a][key][g]["n"] for a in arms) if arms else 0)]
                + [_fmt(per[a][key][g]["length_following"]) for a in arms] for g in report[groups]]
        out.append(f"Length following by {name}\n" + text_table(header, rows))
    return "\n\n".join(out)


def write_plot(report: dict[str, Any], path: str | Path) -> Path:
    """Grouped bars per arm: the score overall and by type, by range and by language (.png or .svg)."""
    per = report["methods"]

    def by_type(arm: str, group: str) -> float | None:
        return (per[arm]["overall"] if group == "overall" else per[arm]["by_type"][group])["length_following"]

    panels: list[tuple[str, list[str], Callable[[str, str], float | None]]] = [
        ("length following by type", ["overall", *report["types"]], by_type),
        ("length following by range", list(report["ranges"]), lambda a, g: per[a]["by_range"][g]["length_following"]),
        ("length following by language", list(report["languages"]),
         lambda a, g: per[a]["by_language"][g]["length_following"]),
    ]
    return plot_panels(path, panels, list(per), ymax=1.3, fmt=lambda v: "-" if v is None else f"{v:.2f}")


def summary(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{"single": {"protocol": "controlled", "length_following": x, "paper": {"length_following": y}}, ...}:
    the main protocol's score at the method's level (controlled when it ran), others nested."""
    def figures(o: dict[str, Any]) -> dict[str, Any]:
        score = o["length_following"]
        return {"length_following": None if score is None else round(score, 3)}

    return summary_by_method(report, figures)


def summary_line(report: dict[str, Any]) -> str:
    """The eval command's last line: one JSON object."""
    return json.dumps(summary(report), ensure_ascii=False)


__all__ = [
    "BUNDLED_SAMPLE", "LonGenFileError", "LonGenItem", "METHODS", "build_report", "failed_outcome", "job_for",
    "load_longen", "local_runner", "outcome_from_result", "render_table", "run_longen", "summary", "summary_line",
    "write_plot",
]
