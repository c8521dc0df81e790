"""Job kind `dataset`: batch-build an SFT dataset, one child `write` job per instruction.

The parent job resolves its instructions (given, from a JSONL, or generated from seed
prompts), spawns the children (idempotently, so a resumed parent never doubles them),
follows them with progress, then applies the quality gates and writes the export files.
The export can also be built at any time from whatever children have finished
(`build_export`, used by the API), so a cancelled build keeps what it made.

Everything goes through the job context: child jobs, their results, the data directory.
"""
from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from agents import dataset as ds
from agents.context import ChildJob, JobContext
from agents.kinds import JobKind, ResultView

FORMATS = ds.FORMATS


class DatasetItem(BaseModel):
    instruction: str = Field(min_length=1)
    target_words: int | None = Field(default=None, gt=0)


class DatasetParams(BaseModel):
    items: list[DatasetItem] | None = None
    jsonl: str | None = Field(default=None, description="JSONL text: one {\"prompt\"|\"instruction\", \"length\"|\"target_words\"} per line")
    document_id: str | None = Field(default=None, description="an uploaded JSONL document")
    seeds: list[str] | None = Field(default=None, description="seed prompts to generate instructions from")
    count: int = Field(default=0, ge=0, le=100_000, description="instructions to generate from the seeds")
    write: dict[str, Any] = Field(default_factory=dict, description="params for every write job (method, temperature, ...)")
    gates: ds.GateSettings = Field(default_factory=ds.GateSettings)
    formats: list[Literal["longwriter", "alpaca", "sharegpt"]] = Field(default_factory=lambda: ["longwriter"])
    child_priority: int = Field(default=7, ge=0, le=9)

    @model_validator(mode="after")
    def _one_source(self) -> "DatasetParams":
        sources = [self.items is not None, self.jsonl is not None, self.document_id is not None, bool(self.seeds)]
        if sum(sources) != 1:
            raise ValueError("give exactly one source of instructions: items, jsonl, document_id or seeds (with count)")
        if self.seeds and self.count < 1:
            raise ValueError("count must be at least 1 when generating instructions from seeds")
        if self.items is not None and not self.items:
            raise ValueError("items is empty")
        return self

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


class DatasetResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    files: dict[str, str] = Field(description="path of each export format's JSONL, and of stats.json ('stats')")
    stats: dict[str, Any] = Field(description="items, kept, drops per gate, statuses, languages, length histogram")
    kept: int | None = Field(description="items that passed every gate")
    items: int | None = Field(description="child write jobs")
    rejected_lines: list[RejectedLine] = Field(default_factory=list, description="input lines that were not instructions")


async def run(ctx: JobContext, params: DatasetParams) -> DatasetResult:
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

    async def spawn() -> list[str]:
        children = [
            {"instruction": item["instruction"], "target_words": item.get("target_words"), **params.write}
            for item in items
        ]
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
    return DatasetResult(**export, rejected_lines=resolved["rejected_lines"])


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


def build_export(children: list[ChildJob], gates: ds.GateSettings, fmt: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    kept, stats = gate_children(children, gates)
    return ds.export_records(kept, fmt), stats


def write_export(children: list[ChildJob], params: DatasetParams, out_dir: Path,
                 measured: MeasuredChildren | None = None) -> dict[str, Any]:
    """Write one JSONL per format and stats.json into `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    kept, stats = gate_children(children, params.gates, measured)
    files: dict[str, str] = {}
    for fmt in params.formats:
        path = out_dir / f"{fmt}.jsonl"
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ds.export_records(kept, fmt)), encoding="utf-8")
        tmp.replace(path)  # readers never see a half-written file
        files[fmt] = str(path)
    stats_path = out_dir / "stats.json"
    stats_path.write_text(json.dumps(stats, indent=2, ensure_ascii=False), encoding="utf-8")
    files["stats"] = str(stats_path)
    return {"files": files, "stats": stats, "kept": stats.get("kept"), "items": stats.get("items")}


KIND = JobKind(
    name="dataset",
    description="batch-build an SFT dataset from write jobs",
    params=DatasetParams,
    result=DatasetResult,
    run=run,
    view=ResultView(),
)
