"""Dataset builds: submit (a `dataset` job), follow, and export JSONL at any time.

Recipes: longwriter (write children, gated), selflengthen (Self-Lengthen's pipeline) and
ruler-mlt (Ruler's D_MLT from (instruction, response) pairs); each exports its own formats."""
from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Depends, Header, HTTPException, Query
from fastapi.responses import JSONResponse, Response, StreamingResponse

from api.auth import Principal, principal
from api.routes.documents import load_visible_document
from api.routes.jobs import BUDGET_FIELDS, check_budget_value, delete_visible_job, load_visible_job, submit_job
from api.serialize import job_json
from api.state import AppState, get_state
from agents import dataset as ds
from agents import dataset_kind
from agents import ruler_mlt
from agents import selflengthen_build
from agents.text import unstorable_text
from db import repo
from db.models import Document
from workers.job_services import read_children

router = APIRouter(prefix="/v1", tags=["datasets"])


@router.post("/datasets", status_code=202)
def create_dataset(
    body: dict[str, Any],
    state: AppState = Depends(get_state),
    who: Principal = Depends(principal),
    idempotency_key: str | None = Header(default=None, alias="Idempotency-Key"),
):
    """Body: the `dataset` params (recipe; items | jsonl | document_id | seeds+count; write, gates, formats;
    for recipe selflengthen protocol, generator_model, extender_model, length_demands, lengthen and
    selflengthen; for recipe ruler-mlt jsonl | document_id of (instruction, response) pairs, mlt_cap,
    seed and formats), an optional priority and an optional prompt_set (its child jobs render from it),
    optional budget caps max_calls and max_tokens_total (0: unlimited; default: the settings'): each
    child job inherits the build's caps as its own (per job, not a total over the build).
    A jsonl source (ruler-mlt: or document) with no usable line is refused: 422 with `rejected_lines`."""
    if problem := unstorable_text(body, "body"):
        raise HTTPException(422, problem)
    params = dict(body)
    priority = params.pop("priority", 5)
    if not isinstance(priority, int) or not 0 <= priority <= 9:
        raise HTTPException(422, "priority must be an integer from 0 to 9")
    prompt_set = params.pop("prompt_set", None)
    if prompt_set is not None and not isinstance(prompt_set, str):
        raise HTTPException(422, "prompt_set must be the name of an installed prompt set")
    budget = {name: check_budget_value(name, params.pop(name, None)) for name in BUDGET_FIELDS}
    rejected: list[dict[str, Any]] = []
    if params.get("recipe") == ruler_mlt.RECIPE:
        source = params.get("jsonl") if isinstance(params.get("jsonl"), str) else _document_text(state, who, params)
        if source is not None:
            pairs, rejected = ruler_mlt.parse_pairs(source)
            if not pairs:
                raise HTTPException(422, {"message": "no valid (instruction, response) lines", "rejected_lines": rejected})
    elif isinstance(params.get("jsonl"), str):
        # Report bad lines now, by line number; the good lines still make the dataset.
        items, rejected = ds.parse_instruction_jsonl(params["jsonl"])
        if not items:
            raise HTTPException(422, {"message": "no valid instruction lines", "rejected_lines": rejected})
    data, created = submit_job(state, who, "dataset", params, priority, idempotency_key, prompt_set=prompt_set,
                               **budget)
    data["rejected_lines"] = rejected
    return JSONResponse(data, status_code=202 if created else 200, headers={"Location": f"/v1/datasets/{data['id']}"})


def _document_text(state: AppState, who: Principal, params: dict[str, Any]) -> str | None:
    """The text of the document a build names (404 when the caller cannot see it), or None."""
    document_id = params.get("document_id")
    if not isinstance(document_id, str) or params.get("jsonl") is not None:
        return None  # no document, or a params error the validation names
    with state.db.reading() as session:
        return load_visible_document(session, document_id, who).text


def _dataset_job(state: AppState, dataset_id: str, who: Principal):
    with state.db.session() as session:
        job = load_visible_job(session, dataset_id, who)
        if job.kind != "dataset":
            raise HTTPException(404, f"dataset {dataset_id} not found (job {dataset_id} is a {job.kind} job)")
        return job_json(session, job)


@router.get("/datasets/{dataset_id}")
def get_dataset(dataset_id: str, state: AppState = Depends(get_state), who: Principal = Depends(principal)):
    body = _dataset_job(state, dataset_id, who)
    with state.db.reading() as session:
        body["children"] = repo.children_status(session, dataset_id)
    return body


@router.delete("/datasets/{dataset_id}", status_code=204,
               responses={409: {"description": "the build or one of its items is queued or running: cancel it first"}})
def delete_dataset(dataset_id: str, state: AppState = Depends(get_state), who: Principal = Depends(principal)):
    """Delete a finished build with its child jobs and its export files (DATA_DIR/datasets/ID)."""
    delete_visible_job(state, dataset_id, who, kind="dataset")
    return Response(status_code=204)


@router.get("/datasets/{dataset_id}/export", response_class=StreamingResponse,
            responses={200: {"content": {"application/x-ndjson": {}}, "description": "JSONL, one record a line"}})
def export_dataset(
    dataset_id: str,
    format: str | None = Query(default=None, description="recipe longwriter: longwriter (messages, the default), "
                               "alpaca or sharegpt; recipe selflengthen: long (the default), gen_sft, ext_sft or sharegpt; "
                               "recipe ruler-mlt: ruler (the default) or chat-mlt"),
    state_length: bool | None = Query(
        default=None, description="state the target length in the user turn when the instruction does not "
                                  "(default: the dataset's `state_length`, true unless built with false)"),
    state: AppState = Depends(get_state),
    who: Principal = Depends(principal),
):
    """JSONL of the items that pass the gates so far: works while running and after a cancel."""
    if format is not None and format not in dataset_kind.FORMATS:
        raise HTTPException(422, f"format must be one of {', '.join(dataset_kind.FORMATS)}")
    job = _dataset_job(state, dataset_id, who)
    recipe = job["params"].get("recipe") or "longwriter"
    format = format or dataset_kind.DEFAULT_FORMATS[recipe][0]
    if format not in dataset_kind.RECIPE_FORMATS[recipe]:
        raise HTTPException(422, f"format {format!r} is not one of recipe {recipe!r}'s: "
                                 f"{', '.join(dataset_kind.RECIPE_FORMATS[recipe])}")
    if recipe == "selflengthen":
        records, _stats = _selflengthen_export(state, job, format)
        records = records[format]
    elif recipe == ruler_mlt.RECIPE:
        records, _stats = _ruler_mlt_export(state, job, format)
        records = records[format]
    else:
        gates = ds.GateSettings.model_validate(job["params"].get("gates") or {})
        if state_length is None:
            state_length = job["params"].get("state_length") is not False
        records, _stats = _export(state, dataset_id, gates, format, state_length)
    lines = (json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    return StreamingResponse(
        lines, media_type="application/x-ndjson",
        headers={"Content-Disposition": f'attachment; filename="{dataset_id}-{format}.jsonl"'},
    )


@router.get("/datasets/{dataset_id}/stats")
def dataset_stats(dataset_id: str, state: AppState = Depends(get_state), who: Principal = Depends(principal)):
    job = _dataset_job(state, dataset_id, who)
    if job["params"].get("recipe") == "selflengthen":
        return _selflengthen_export(state, job, "long")[1]
    if job["params"].get("recipe") == ruler_mlt.RECIPE:
        with state.db.reading() as session:
            return ruler_mlt.stored_stats(job["params"], repo.succeeded_steps(session, dataset_id))
    gates = ds.GateSettings.model_validate(job["params"].get("gates") or {})
    _records, stats = _export(state, dataset_id, gates, "longwriter")
    return stats


def _selflengthen_export(state: AppState, job: dict[str, Any], fmt: str):
    """From the build's stored steps and its children, as the job itself exports."""
    with state.db.reading() as session:
        children = read_children(session, job["id"])
        steps = repo.succeeded_steps(session, job["id"])
    overlay = state.settings.prompt_overlay(job.get("prompt_set"))
    return selflengthen_build.export(job["params"], steps, children, fmt, overlay=overlay)


def _ruler_mlt_export(state: AppState, job: dict[str, Any], fmt: str):
    """From the build's stored step and its source (the job's jsonl or its document)."""
    with state.db.reading() as session:
        steps = repo.succeeded_steps(session, job["id"])
        source = job["params"].get("jsonl")
        if source is None and ruler_mlt.STEP in steps:  # the document was checked at submit
            doc = session.get(Document, job["params"]["document_id"])
            if doc is None:  # deleted since (DELETE /v1/documents/{id})
                raise HTTPException(410, f"the dataset's source document {job['params']['document_id']} was deleted")
            source = doc.text
    return ruler_mlt.export(job["params"], steps, source or "", fmt)


def _export(state: AppState, dataset_id: str, gates: ds.GateSettings, fmt: str, state_length: bool = True):
    with state.db.reading() as session:
        children = read_children(session, dataset_id)
    return dataset_kind.build_export(children, gates, fmt, state_length)
