"""Job kind `dataset`: batch-build an SFT dataset, one child `write` job per instruction.

Three recipes (`recipe`): `longwriter` (the default, described here), `selflengthen`
(Self-Lengthen's data pipeline with `lengthen` children: agents/selflengthen_build.py) and
`ruler-mlt` (Ruler's D_MLT: existing (instruction, response) pairs labelled with Meta Length
Tokens, no model calls: agents/ruler_mlt.py). A param that only another recipe reads is
refused, not ignored.

The parent job resolves its instructions (given, from a JSONL, or generated from seed
prompts), gives every instruction a target length (its own `target_words`, the length its
text states, or else one drawn from `length_distribution` with `seed`, the instruction then
rewritten to state it), spawns the children (idempotently, so a resumed parent never doubles
them), follows them with progress, then applies the quality gates and writes the export files.
The export can also be built at any time from whatever children have finished
(`build_export`, used by the API), so a cancelled build keeps what it made.

Everything goes through the job context: child jobs, their results, the data directory.
"""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from agents import dataset as ds
from agents import ruler_mlt as rm
from agents import selflengthen_build as slb
from agents.context import ChildJob, JobContext
from agents.kinds import JobKind, ModelName, ResultView
from agents.length_target import with_stated_length
from agents.protocol import Protocol

RECIPES = ("longwriter", "selflengthen", rm.RECIPE)
# Export formats by recipe; FORMATS: every format the export endpoint knows.
RECIPE_FORMATS: dict[str, tuple[str, ...]] = {"longwriter": ds.FORMATS, "selflengthen": slb.FORMATS,
                                              rm.RECIPE: rm.FORMATS}
FORMATS = tuple(dict.fromkeys(f for formats in RECIPE_FORMATS.values() for f in formats))
DEFAULT_FORMATS = {"longwriter": ["longwriter"], "selflengthen": list(slb.FORMATS), rm.RECIPE: list(rm.FORMATS)}
# Params that only one recipe reads: set for another, they are refused rather than ignored.
SELFLENGTHEN_ONLY = ("protocol", "generator_model", "extender_model", "length_demands", "lengthen", "selflengthen")
LONGWRITER_ONLY = ("write", "gates", "length_distribution", "state_length")
RULER_MLT_ONLY = ("mlt_cap",)
RECIPE_ONLY = {"longwriter": LONGWRITER_ONLY, "selflengthen": SELFLENGTHEN_ONLY, rm.RECIPE: RULER_MLT_ONLY}
# Params of the child-spawning recipes that ruler-mlt (no children, no generated instructions) has no use for.
NOT_RULER_MLT = ("count", "child_priority")


class DatasetItem(BaseModel):
    instruction: str = Field(min_length=1)
    target_words: int | None = Field(default=None, gt=0)


class DatasetParams(BaseModel):
    recipe: Literal["longwriter", "selflengthen", "ruler-mlt"] = Field(
        default="longwriter",
        description="longwriter: AgentWrite (or single) write jobs per instruction, LongWriter-6k style; "
                    "selflengthen: Self-Lengthen's data pipeline (self-instruct, Generator answers, lengthen "
                    "children, length-biased sampling; agents/selflengthen_build.py); ruler-mlt: Ruler's D_MLT, "
                    "(instruction, response) pairs from jsonl or document_id labelled with the MLT whose window "
                    "holds the response's \\w+ count, capped per MLT and shuffled (agents/ruler_mlt.py)")
    items: list[DatasetItem] | None = None
    jsonl: str | None = Field(default=None, description="JSONL text: one {\"prompt\"|\"instruction\", \"length\"|\"target_words\"} "
                              "per line; ruler-mlt: one pair per line, {\"instruction\"|\"Instruction\"|\"prompt\"|\"query\", "
                              "\"response\"|\"output\"|\"answer\"} or a single-turn {\"conversations\": [human, gpt]}")
    document_id: str | None = Field(default=None, description="an uploaded JSONL document")
    seeds: list[str] | None = Field(default=None, description="seed prompts to generate instructions from")
    count: int = Field(default=0, ge=0, le=100_000, description="instructions to generate from the seeds")
    write: dict[str, Any] = Field(default_factory=dict, description="params for every write job (method, temperature, ...)")
    gates: ds.GateSettings = Field(default_factory=ds.GateSettings)
    formats: list[Literal["longwriter", "alpaca", "sharegpt", "long", "gen_sft", "ext_sft", "ruler", "chat-mlt"]] | None = Field(
        default=None, description="export formats; longwriter recipe: longwriter (default), alpaca, sharegpt; "
                                  "selflengthen: long, gen_sft, ext_sft, sharegpt (default: all four); "
                                  "ruler-mlt: ruler (the reference's records), chat-mlt (default: both)")
    child_priority: int = Field(default=7, ge=0, le=9)
    length_distribution: ds.LengthDistribution = Field(
        default_factory=ds.LongWriter6kLengths,
        description='target of an instruction that states none: {"kind": "longwriter6k"} (90% uniform 2,000-10,000 '
                    'words, 10% log-uniform 10,000-32,000), {"kind": "uniform", "min": N, "max": M} or {"kind": "fixed", "words": N}',
    )
    seed: int = Field(default=0, description="seed of the drawn lengths: the same seed draws the same lengths "
                                             "(selflengthen: of every draw of the build; ruler-mlt: of the shuffle)")
    state_length: bool = Field(default=True, description="exports state the target length in the user turn when the instruction does not")
    # The selflengthen recipe.
    protocol: Protocol | None = Field(
        default=None, description="selflengthen: paper (default; the lengthen children run the reference's 3 "
                                  "micro-iterations and 1.2x gate) or controlled")
    generator_model: ModelName = Field(default=None, description="selflengthen: the Generator's model (on vLLM a "
                                        "LoRA adapter such as gen_sft, for a second round); default the server's")
    extender_model: ModelName = Field(default=None, description="selflengthen: the Extender's model (ext_sft); "
                                       "default the server's")
    length_demands: bool = Field(default=False, description="selflengthen: the long and sharegpt exports' queries "
                                 "rewritten to state their response's length (2,000-8,000 words)")
    lengthen: dict[str, Any] = Field(default_factory=dict, description="selflengthen: params for every lengthen "
                                     "child (temperature, micro_iterations, continuation, max_initial_attempts, ...)")
    selflengthen: slb.SelfLengthenOptions = Field(default_factory=slb.SelfLengthenOptions,
                                                  description="selflengthen: the recipe's knobs")
    # The ruler-mlt recipe.
    mlt_cap: int | None = Field(default=None, ge=1, description=f"ruler-mlt: at most this many pairs per MLT, the "
                                f"first in input order (default {rm.DEFAULT_CAP:,}, the reference's)")

    @model_validator(mode="after")
    def _one_source(self) -> "DatasetParams":
        if self.recipe == rm.RECIPE and (self.items is not None or self.seeds):
            raise ValueError(f"recipe {rm.RECIPE!r} reads (instruction, response) pairs: give jsonl or document_id, "
                             f"not {'items' if self.items is not None else 'seeds'}")
        sources = [self.items is not None, self.jsonl is not None, self.document_id is not None, bool(self.seeds)]
        if sum(sources) != 1:
            raise ValueError("give exactly one source of instructions: items, jsonl, document_id or seeds (with count)")
        if self.seeds and self.count < 1:
            raise ValueError("count must be at least 1 when generating instructions from seeds")
        if self.items is not None and not self.items:
            raise ValueError("items is empty")
        return self

    @model_validator(mode="after")
    def _recipe_fields(self) -> "DatasetParams":
        for other, names in RECIPE_ONLY.items():
            if other == self.recipe:
                continue
            for name in names:
                if self._set(name):
                    raise ValueError(f"{name} applies to the {other} recipe, not to recipe {self.recipe!r}")
        if self.recipe == rm.RECIPE:
            for name in NOT_RULER_MLT:
                if self._set(name):
                    raise ValueError(f"{name} does not apply to recipe {self.recipe!r} (it generates no instructions and "
                                     "spawns no jobs)")
            if self.mlt_cap is None:
                self.mlt_cap = rm.DEFAULT_CAP
        if self.formats is None:
            self.formats = list(DEFAULT_FORMATS[self.recipe])
        wrong = [f for f in self.formats if f not in RECIPE_FORMATS[self.recipe]]
        if wrong:
            raise ValueError(f"format {wrong[0]!r} is not one of recipe {self.recipe!r}'s: "
                             f"{', '.join(RECIPE_FORMATS[self.recipe])}")
        return self

    def _set(self, name: str) -> bool:
        """Whether a param was given a value other than its default."""
        return name in self.model_fields_set and getattr(self, name) != type(self).model_fields[name].get_default(
            call_default_factory=True)

    @field_validator("lengthen")
    @classmethod
    def _valid_lengthen_params(cls, lengthen: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        slb.check_lengthen_params(lengthen, info.context)
        return lengthen


    @field_validator("length_distribution")
    @classmethod
    def _within_max_target(cls, distribution: Any, info: ValidationInfo) -> Any:
        cap = (info.context or {}).get("max_target_words")
        high = distribution.bounds()[1]
        if cap and distribution.kind != "longwriter6k" and high > cap:  # the default is capped when drawn
            raise ValueError(f"length_distribution goes up to {high} words; this service's max_target_words is {cap}")
        return distribution

    @field_validator("write")
    @classmethod
    def _valid_write_params(cls, write: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        from agents.agentwrite import WriteParams

        probe = {"instruction": "probe", "target_words": 1000, **write}  # check the shared options early
        WriteParams.model_validate(probe, context=info.context)
        return write


class RejectedLine(BaseModel):
    line: int
    error: str


class ItemLength(BaseModel):
    target_words: int = Field(description="the length the write job was given")
    source: Literal["given", "parsed", "drawn"] = Field(
        description="given: the item's target_words; parsed: stated in the instruction; drawn: from length_distribution")


class DatasetResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    files: dict[str, str] = Field(description="path of each export format's JSONL, and of stats.json ('stats')")
    stats: dict[str, Any] = Field(description="items, kept, drops per gate, statuses, languages, length histogram "
                                              "(ruler-mlt: drops by cause, records per MLT, windows, cap, seed)")
    kept: int | None = Field(description="items that passed every gate (ruler-mlt: records exported)")
    items: int | None = Field(description="child write jobs (selflengthen: instructions; ruler-mlt: input lines read)")
    rejected_lines: list[RejectedLine] = Field(default_factory=list, description="input lines that were not "
                                               "instructions (ruler-mlt: not (instruction, response) pairs)")
    lengths: list[ItemLength] = Field(default_factory=list, description="each item's target length and its source, in item order")
    length_sources: dict[str, int] = Field(default_factory=dict, description="items by length source: given, parsed, drawn")
    recipe: Literal["longwriter", "selflengthen", "ruler-mlt"] = Field("longwriter", description="the recipe that built it")


async def run(ctx: JobContext, params: DatasetParams) -> DatasetResult:
    if params.recipe == "selflengthen":
        return DatasetResult(**await slb.run(ctx, params))
    if params.recipe == rm.RECIPE:
        return DatasetResult(**await rm.run(ctx, params))
    async def resolve_items() -> dict[str, Any]:
        if params.items is not None:
            return {"items": [i.model_dump() for i in params.items], "rejected_lines": []}
        if params.seeds:
            generated = await ds.generate_instructions(ctx, params.seeds, params.count)
            return {"items": generated, "rejected_lines": []}
        text = params.jsonl if params.jsonl is not None else await ctx.load_document(params.document_id)
        items, errors = ds.parse_instruction_jsonl(text)
        return {"items": items, "rejected_lines": errors}

    resolved = await ctx.step("items", resolve_items)
    items = resolved["items"]
    if not items:
        raise ValueError(f"no usable instructions ({len(resolved['rejected_lines'])} lines rejected)")

    async def assign_lengths() -> list[dict[str, Any]]:
        given = params.write.get("target_words")  # one target for every item
        targets = [{**item, "target_words": given} for item in items] if given else items
        return ds.assign_lengths(targets, params.length_distribution, params.seed, ctx.settings.max_target_words)

    lengths = await ctx.step("lengths", assign_lengths)

    async def spawn() -> list[str]:
        children = [child_params(item, length, params.write) for item, length in zip(items, lengths)]
        return await ctx.spawn_children("write", children, params.child_priority)

    await ctx.step("spawn", spawn)
    measured = MeasuredChildren(params.gates.shingle_size)

    async def measure_finished() -> None:
        # Measured while the other children still run, so the export after the last one
        # has little left to do.
        new = await ctx.children(finished_only=True, exclude=measured.child_ids())
        await asyncio.to_thread(measured.update, new)

    await ctx.wait_children(on_finished=measure_finished)
    children = await ctx.children()
    export = await asyncio.to_thread(write_export, children, params, ctx.data_dir / "datasets" / ctx.job_id, measured)
    sources = {source: sum(1 for x in lengths if x["source"] == source) for source in ds.LENGTH_SOURCES}
    return DatasetResult(**export, rejected_lines=resolved["rejected_lines"], lengths=lengths, length_sources=sources)


def child_params(item: dict[str, Any], length: dict[str, Any], write: dict[str, Any]) -> dict[str, Any]:
    """A write job's params. A drawn length is stated in the instruction and given as
    target_words; otherwise the item's target_words (None: the write job parses the text)."""
    if length["source"] == "drawn":
        instruction = with_stated_length(item["instruction"], length["target_words"])
        return {**write, "instruction": instruction, "target_words": length["target_words"]}
    return {"instruction": item["instruction"], "target_words": item.get("target_words"), **write}


class MeasuredChildren:
    """Finished children as samples with their gate features, computed once each."""

    def __init__(self, shingle_size: int):
        self.shingle_size = shingle_size
        self._samples: dict[tuple[str, Any], ds.Sample] = {}  # by (child id, finished_at)

    def child_ids(self) -> set[str]:
        return {child_id for child_id, _ in self._samples}

    def update(self, children: list[ChildJob]) -> None:
        for child in children:
            sample = sample_of(child)
            if sample.status == "succeeded":
                sample.gate_features(self.shingle_size)
            self._samples[(child.id, child.finished_at)] = sample

    def get(self, child: ChildJob) -> ds.Sample | None:
        """The measured sample of this child, unless it changed since (a retried child)."""
        return self._samples.get((child.id, child.finished_at))


def sample_of(child: ChildJob) -> ds.Sample:
    return ds.Sample.from_write_job(child.status, child.params, child.result)


def gate_children(children: list[ChildJob], gates: ds.GateSettings,
                  measured: MeasuredChildren | None = None) -> tuple[list[ds.Sample], dict[str, Any]]:
    """The children (in item order) that pass the gates, and the dataset's stats."""
    samples = [(measured and measured.get(child)) or sample_of(child) for child in children]
    kept, gate_counts = ds.apply_gates(samples, gates)
    return kept, ds.dataset_stats(samples, kept, gate_counts)


def build_export(children: list[ChildJob], gates: ds.GateSettings, fmt: str,
                 state_length: bool = True) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Records of the children that pass the gates, and the stats. `state_length` is the
    export's switch (a recipe whose signal is elsewhere, e.g. a length token, passes False)."""
    kept, stats = gate_children(children, gates)
    return ds.export_records(kept, fmt, state_length=state_length), stats


def write_export(children: list[ChildJob], params: DatasetParams, out_dir: Path,
                 measured: MeasuredChildren | None = None) -> dict[str, Any]:
    """Write one JSONL per format and stats.json into `out_dir`."""
    kept, stats = gate_children(children, params.gates, measured)
    records = {fmt: ds.export_records(kept, fmt, state_length=params.state_length) for fmt in params.formats}
    files = ds.write_files(out_dir, records, stats)
    return {"files": files, "stats": stats, "kept": stats.get("kept"), "items": stats.get("items")}


KIND = JobKind(
    name="dataset",
    description="batch-build an SFT dataset: from write jobs (recipe longwriter), by Self-Lengthen (selflengthen) "
                "or by labelling (instruction, response) pairs with Ruler's Meta Length Tokens (ruler-mlt)",
    params=DatasetParams,
    result=DatasetResult,
    run=run,
    version=2,  # 2: target lengths (the `lengths` step; drawn lengths stated in the instruction)
    view=ResultView(stats="stats", exports="files"),
)
