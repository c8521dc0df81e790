"""Ruler's D_MLT training data: the `ruler-mlt` recipe of the `dataset` job kind (spec B.1, B.4, B.5).

No model calls: existing (instruction, response) pairs are labelled with Meta Length Tokens.

1. Read the pairs (`parse_pairs`), one per JSONL line: {"instruction"|"Instruction"|"prompt"|
   "query", "response"|"output"|"answer"}, or a single-turn conversation {"conversations":
   [{"from": "human"|"user", "value"|"content": ...}, {"from": "gpt"|"assistant", ...}]}
   (ShareGPT, OpenHermes; "messages" with "role" is read the same way). A leading system turn
   is dropped (the ruler record has no place for it) and counted; a conversation with more
   than one exchange is rejected. Rejected lines (not JSON, no pair, multi-turn, an empty
   instruction or response) are reported by line number.
2. Count each response with Ruler's counter (`count_word_runs`: `\\w+` runs) after removing
   every MLT already in it (`strip_mlt`; the output keeps no MLT either, so a file of our own
   exports can be read again).
3. Label it with the MLT whose window (lo, hi] holds the count (`mlt_for_count`, windows in
   `agents.metrics.ruler.MLT_WINDOWS`); a response outside every window (e.g. 16-25 or
   800 words) is dropped as `outside_windows`.
4. Keep at most `mlt_cap` per MLT (default 20,000, the reference's `SAMPLE`), the first ones
   in input order: input order is priority, as the reference fills each MLT from its first
   source, then the next (OpenHermes, LongForm, ELI5), so concatenate sources in that order.
   The excess is dropped as `over_cap`.
5. Shuffle what is kept with `random.Random(seed)` and number it 0..n-1 in that order.

Exports (`FORMATS`):
- `ruler`: the reference's records {"Instruction", "word_count", "output", "mlt", "id"}, with
  `mlt` the token string ("[MLT:150]"), as the reference's MetaLengthToken table holds it;
- `chat-mlt`: {"messages": [user, assistant]}, the user turn the instruction unchanged (it
  states no length: the MLT is the signal) and the assistant turn the MLT and the answer with
  no separator ("[MLT:150]The answer..."), where Ruler puts it (B.1).

Where this differs from the reference (also in the stats, `differs_from_reference`):
- `word_count` is the `\\w+` count the label was given by; the reference stores a
  whitespace-split count beside a label made with `\\w+` (B.4's quirk);
- the cap keeps the first pairs of each MLT in input order; the reference shuffles each
  source's bucket before taking up to the cap (shuffle the file first for that);
- MLTs already in a response are removed before counting (the reference counts the text as is);
- a leading system turn is dropped and the pair kept (the reference keeps two-turn rows only);
- the reference also sets its TLG test set aside (the first 2,000 of its seed-10 shuffle of
  OpenHermes): leave your evaluation instructions out of the input.

Storage: the build is one step (`STEP`) whose output is the picks, [line, mlt token, words]
in shuffled order, and the stats; the records are rebuilt from the source (the job's `jsonl`
or its document, neither of which changes) by `export`, so the database holds no second copy
of the texts and any API replica can export.
"""
from __future__ import annotations

import asyncio
import random
from typing import Any, Iterable, Iterator

from agents import dataset as ds
from agents.context import JobContext
from agents.metrics.ruler import INF, MLT_VALUES, MLT_WINDOWS, mlt_for_count, mlt_token, strip_mlt
from agents.text import count_word_runs

RECIPE = "ruler-mlt"
FORMATS = ("ruler", "chat-mlt")
DEFAULT_CAP = 20_000  # per MLT: the reference's SAMPLE = 10000 * 2
STEP = "mlt"
INSTRUCTION_KEYS = ("instruction", "Instruction", "prompt", "query")
RESPONSE_KEYS = ("response", "output", "answer")
USER_ROLES = ("human", "user")
ASSISTANT_ROLES = ("gpt", "assistant")
DIFFERS_FROM_REFERENCE = (
    "word_count is the \\w+ count the MLT was chosen by (reference: a whitespace-split count)",
    "the cap keeps each MLT's first pairs in input order (reference: each source's bucket shuffled, then capped)",
    "MLTs already in a response are removed before counting (reference: counted as they are)",
    "a leading system turn is dropped and the pair kept (reference: two-turn conversations only)",
    "no TLG test set is set aside (reference: the first 2,000 of its seed-10 OpenHermes shuffle)",
)


# -- input -----------------------------------------------------------------------------------------


def parse_pairs(data: str | bytes) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(pairs, rejected): pairs [{"instruction", "output", "mlts_removed", "system_dropped",
    "line"}, ...] in input order, `output` the response without MLTs; rejected [{"line",
    "error"}, ...] as `agents.dataset.parse_instruction_jsonl` reports them."""
    return ds.read_jsonl_rows(data, pair_from_row)


def pair_from_row(row: Any) -> dict[str, Any]:
    """One JSONL row as a pair (module doc, step 1); ValueError says why a row is not one."""
    if not isinstance(row, dict):
        raise ValueError("each line must be a JSON object")
    turns_key = next((k for k in ("conversations", "messages") if k in row), None)
    if turns_key is not None:
        instruction, response, system = _single_turn(row[turns_key], turns_key)
    else:
        instruction = _field(row, INSTRUCTION_KEYS, "instruction")
        response = _field(row, RESPONSE_KEYS, "response")
        system = False
    if not instruction.strip():
        raise ValueError("empty instruction")
    output = strip_mlt(response)
    if not output.strip():
        raise ValueError("empty response" + (" once its MLTs are removed" if output != response else ""))
    return {"instruction": instruction, "output": output, "mlts_removed": output != response, "system_dropped": system}


def _field(row: dict[str, Any], keys: tuple[str, ...], what: str) -> str:
    key = next((k for k in keys if k in row), None)
    if key is None:
        alternatives = ", ".join(f'"{k}"' for k in keys)
        raise ValueError(f"missing {what}: give one of {alternatives}, or a \"conversations\" list")
    if not isinstance(row[key], str):
        raise ValueError(f'"{key}" must be a string, got {type(row[key]).__name__}')
    return row[key]


def _single_turn(turns: Any, key: str) -> tuple[str, str, bool]:
    """(instruction, response, whether a system turn was dropped) of a one-exchange conversation."""
    if not isinstance(turns, list) or not all(isinstance(t, dict) for t in turns):
        raise ValueError(f'"{key}" must be a list of turns (objects)')
    roles = [str(t.get("from", t.get("role", ""))).lower() for t in turns]
    system = bool(roles) and roles[0] == "system"
    if system:
        turns, roles = turns[1:], roles[1:]
    if len(turns) > 2:
        raise ValueError(f"multi-turn conversation ({len(turns)} turns): only one user turn and one answer make a pair")
    if len(turns) < 2 or roles[0] not in USER_ROLES or roles[1] not in ASSISTANT_ROLES:
        raise ValueError(f'"{key}" must be a user turn then an assistant turn, got {roles or "none"}')
    texts = [t.get("value", t.get("content")) for t in turns]
    if not all(isinstance(text, str) for text in texts):
        raise ValueError('each turn needs its text as a string in "value" (or "content")')
    return texts[0], texts[1], system


# -- the build -------------------------------------------------------------------------------------


def build(pairs: list[dict[str, Any]], rejected: int, cap: int = DEFAULT_CAP, seed: int = 0) -> dict[str, Any]:
    """The step output: {"picks": [[line, mlt token, words], ...] in shuffled order (ids are
    the positions), "stats": ...}. `rejected`: the lines the reader rejected (for the stats)."""
    labelled = {mlt: 0 for mlt in MLT_VALUES}
    kept_per = {mlt: 0 for mlt in MLT_VALUES}
    picks: list[list[Any]] = []
    outside = over = 0
    for pair in pairs:  # input order: the first pairs of an MLT fill its cap
        words = count_word_runs(pair["output"])
        mlt = mlt_for_count(words)
        if mlt is None:
            outside += 1
            continue
        labelled[mlt] += 1
        if kept_per[mlt] >= cap:
            over += 1
            continue
        kept_per[mlt] += 1
        picks.append([pair["line"], mlt_token(mlt), words])
    random.Random(seed).shuffle(picks)
    stats = {
        "recipe": RECIPE,
        "built": True,
        "items": len(pairs) + rejected,
        "pairs": len(pairs),
        "kept": len(picks),
        "dropped": {"invalid": rejected, "outside_windows": outside, "over_cap": over},
        "per_mlt": {mlt_token(m): n for m, n in kept_per.items()},
        "labelled_per_mlt": {mlt_token(m): n for m, n in labelled.items()},  # before the cap
        "mlt_cap": cap,
        "seed": seed,
        "windows": windows(),
        "counter": "\\w+ runs (Ruler's RegexpTokenizer(r'\\w+')) of the response without MLTs",
        "mlts_removed": sum(1 for p in pairs if p["mlts_removed"]),
        "system_turns_dropped": sum(1 for p in pairs if p["system_dropped"]),
        "formats": {fmt: len(picks) for fmt in FORMATS},
        "differs_from_reference": list(DIFFERS_FROM_REFERENCE),
    }
    return {"picks": picks, "stats": stats}


def windows() -> dict[str, list[int | None]]:
    """The MLT windows as JSON: {"[MLT:10]": [5, 15], ..., "[MLT:>800]": [800, null]} (lo, hi]."""
    return {mlt_token(m): [int(lo), None if hi == INF else int(hi)] for m, (lo, hi) in MLT_WINDOWS.items()}


# -- export ----------------------------------------------------------------------------------------


def export_records(pairs: list[dict[str, Any]], picks: list[list[Any]], fmt: str) -> Iterator[dict[str, Any]]:
    """The records of one format, in id order, from the parsed source and the stored picks."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r} for the {RECIPE} recipe; use one of {', '.join(FORMATS)}")
    return _records({p["line"]: p for p in pairs}, picks, fmt)


def _records(by_line: dict[int, dict[str, Any]], picks: list[list[Any]], fmt: str) -> Iterator[dict[str, Any]]:
    for record_id, (line, token, words) in enumerate(picks):
        pair = by_line.get(line)
        if pair is None:  # only if the reader changed since the build
            raise ValueError(f"line {line} of the source is no longer a pair: build the dataset again")
        if fmt == "ruler":
            yield {"Instruction": pair["instruction"], "word_count": words, "output": pair["output"], "mlt": token,
                   "id": record_id}
        else:
            yield {"messages": [{"role": "user", "content": pair["instruction"]},
                                {"role": "assistant", "content": token + pair["output"]}]}


def pending_stats(params: dict[str, Any]) -> dict[str, Any]:
    """The stats of a build whose step has not run yet."""
    return {"recipe": RECIPE, "built": False, "items": 0, "kept": 0, "mlt_cap": params.get("mlt_cap"),
            "seed": params.get("seed"), "windows": windows()}


def stored_stats(params: dict[str, Any], steps: dict[str, Any]) -> dict[str, Any]:
    """The stats of a build from its params (as stored) and its stored steps."""
    built = steps.get(STEP)
    return built["stats"] if built is not None else pending_stats(params)


def export(params: dict[str, Any], steps: dict[str, Any], source: str | bytes,
           fmt: str | None = None) -> tuple[dict[str, Iterable[dict[str, Any]]], dict[str, Any]]:
    """({format: records}, stats) of a build from its params (as stored), its stored steps and
    its source text: the API's export at any time (no records before the step has run)."""
    built = steps.get(STEP)
    names = [fmt] if fmt is not None else list(FORMATS)
    if built is None:
        return {name: [] for name in names}, pending_stats(params)
    pairs, _ = parse_pairs(source)
    return {name: export_records(pairs, built["picks"], name) for name in names}, built["stats"]


# -- the job ---------------------------------------------------------------------------------------


async def run(ctx: JobContext, params: Any) -> dict[str, Any]:
    """The recipe (module doc). Returns the DatasetResult fields."""
    source = params.jsonl if params.jsonl is not None else await ctx.load_document(params.document_id)
    pairs, rejected = await asyncio.to_thread(parse_pairs, source)
    if not pairs:
        first = f"; line {rejected[0]['line']}: {rejected[0]['error']}" if rejected else ""
        raise ValueError(f"no (instruction, response) pairs in the input ({len(rejected)} lines rejected{first})")

    async def label() -> dict[str, Any]:
        return await asyncio.to_thread(build, pairs, len(rejected), params.mlt_cap, params.seed)

    built = await ctx.step(STEP, label)
    records = {fmt: export_records(pairs, built["picks"], fmt) for fmt in params.formats}
    files = await asyncio.to_thread(ds.write_files, ctx.data_dir / "datasets" / ctx.job_id, records, built["stats"])
    stats = built["stats"]
    return {"files": files, "stats": stats, "kept": stats["kept"], "items": stats["items"],
            "rejected_lines": rejected, "recipe": RECIPE}
