"""Job kind `dataset`: batch-build an SFT dataset, one child `write` job per instruction.

The parent job resolves its instructions (given, from a JSONL, or generated from seed
prompts), spawns the children (idempotently, so a resumed parent never doubles them),
follows them with progress, then applies the quality gates and writes the export files.
The export can also be built at any time from whatever children have finished, so a
cancelled build keeps what it made.
"""
from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationInfo, field_validator, model_validator

from agents import dataset as ds
from agents.context import JobContext
from db import repo
from db.models import FINISHED_STATUSES

FORMATS = ("longwriter", "alpaca", "sharegpt")


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


async def run(ctx: JobContext, params: DatasetParams) -> dict[str, Any]:
    runtime = ctx.runtime

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
        return await runtime.spawn_children(ctx.job_id, "write", children, params.child_priority)

    child_ids = await ctx.step("spawn", spawn)
    total = len(child_ids)
    measured = MeasuredChildren(params.gates.shingle_size)
    measured_count = 0
    while True:
        counts = await runtime.children_status(ctx.job_id)
        finished = sum(counts.get(s, 0) for s in FINISHED_STATUSES)
        await ctx.progress(finished, total, children=counts)
        if finished >= total:
            break
        ctx.check_cancelled()
        # One cheap grouped count per poll; meanwhile the texts finished so far are measured
        # for the gates, so the export after the last child has little left to do.
        pause = asyncio.sleep(0.1)
        if finished > measured_count:
            await asyncio.gather(asyncio.to_thread(measured.update, runtime.db, ctx.job_id), pause)
            measured_count = finished
        else:
            await pause

    export = await asyncio.to_thread(
        write_export, runtime.db, ctx.job_id, params, Path(ctx.settings.longform_data_dir), measured)
    export["rejected_lines"] = resolved["rejected_lines"]
    return export


class MeasuredChildren:
    """Finished children as samples with their gate features, measured while the other
    children still run, so that the export after the last one has little left to do."""

    def __init__(self, shingle_size: int):
        self.shingle_size = shingle_size
        self._samples: dict[tuple[str, Any], ds.Sample] = {}  # by (child id, finished_at)

    def update(self, db, parent_id: str) -> None:
        """Measure the children that finished since the last call."""
        with db.reading() as session:
            children = repo.finished_children(session, parent_id, exclude={child_id for child_id, _ in self._samples})
        for child in children:
            sample = ds.Sample.from_write_job(child.status, child.params, child.result)
            if sample.status == "succeeded":
                sample.gate_features(self.shingle_size)
            self._samples[(child.id, child.finished_at)] = sample

    def get(self, child) -> ds.Sample | None:
        """The measured sample of this child, unless it changed since (a retried child)."""
        return self._samples.get((child.id, child.finished_at))


def collect_samples(db, parent_id: str, measured: MeasuredChildren | None = None) -> list[ds.Sample]:
    """Every child of a dataset job as a sample for the gates, in item order."""
    with db.reading() as session:
        children, _ = repo.list_jobs(session, parent_id=parent_id, limit=1_000_000)
    children.sort(key=lambda j: (j.created_at, j.id))
    return [(measured and measured.get(child)) or ds.Sample.from_write_job(child.status, child.params, child.result)
            for child in children]


def gate_children(db, parent_id: str, gates: ds.GateSettings,
                  measured: MeasuredChildren | None = None) -> tuple[list[ds.Sample], dict[str, Any]]:
    """The children that pass the gates, and the dataset's stats."""
    samples = collect_samples(db, parent_id, measured)
    kept, gate_counts = ds.apply_gates(samples, gates)
    return kept, ds.dataset_stats(samples, kept, gate_counts)


def build_export(db, parent_id: str, gates: ds.GateSettings, fmt: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    kept, stats = gate_children(db, parent_id, gates)
    return ds.export_records(kept, fmt), stats


def write_export(db, parent_id: str, params: DatasetParams, data_dir: Path,
                 measured: MeasuredChildren | None = None) -> dict[str, Any]:
    """Write one JSONL per format and stats.json under the data directory."""
    out_dir = data_dir / "datasets" / parent_id
    out_dir.mkdir(parents=True, exist_ok=True)
    kept, stats = gate_children(db, parent_id, params.gates, measured)
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
