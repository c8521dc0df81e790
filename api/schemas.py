"""Response models of the REST API, for the OpenAPI docs at /docs.

A job's `result` is documented as any registered kind's result model (`GET /v1/kinds` says
which kind has which). Routes send the stored JSON as it is (rows stored before result
models existed come back unchanged), so these models describe responses without
re-validating them.
"""
from __future__ import annotations

from typing import Any, Union

from pydantic import BaseModel, Field, create_model

from agents.kinds import ResultView, all_kinds
from agents.status import JobStatus


class Usage(BaseModel):
    steps: int
    calls: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int


class Budget(BaseModel):
    max_calls: int | None = Field(default=None, description="cap on the job's model calls; null: unlimited")
    calls: int = Field(description="model calls its steps made so far")
    max_tokens_total: int | None = Field(default=None, description="cap on prompt + completion tokens; null: unlimited")
    tokens: int = Field(description="prompt + completion tokens its steps used so far")


class JobSummary(BaseModel):
    id: str
    kind: str
    status: JobStatus
    progress: float = Field(description="0 to 1")
    progress_detail: dict[str, Any] | None = None
    error: str | None = None
    priority: int
    prompt_set: str | None = Field(default=None, description="the named prompt set the job renders its templates from")
    parent_id: str | None = None
    owner: str | None = None
    runs: int
    created_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    usage: Usage
    budget: Budget | None = None


def _result_union() -> Any:
    models = tuple(kind.result for kind in all_kinds())
    return Union[models + (dict[str, Any],)] if models else dict[str, Any]  # noqa: UP007 (built at run time)


Job = create_model(
    "Job",
    __base__=JobSummary,
    params=(dict[str, Any] | None, None),
    result=(_result_union() | None, Field(default=None, description="once succeeded: the kind's result model")),
    scores=(dict[str, float | None], Field(default_factory=dict, description="metric values the result carries")),
)


class JobList(BaseModel):
    items: list[JobSummary]
    total: int
    limit: int
    offset: int


class StepOut(BaseModel):
    key: str
    status: str
    attempt: int
    template: str | None = None
    template_hash: str | None = None
    fingerprint: str | None = None
    model: str | None = None
    calls: int | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None
    latency_s: float | None = None
    finish_reason: str | None = None
    error: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    output: Any = None


class StepList(BaseModel):
    items: list[StepOut]


class KindOut(BaseModel):
    kind: str
    description: str
    version: int
    params_schema: dict[str, Any]
    result_schema: dict[str, Any]
    view: ResultView


class KindList(BaseModel):
    items: list[KindOut]
