"""Job kinds: each kind is one declaration (`JobKind`), and this registry is the single list.

A kind declares its name, description, params model, result model, `run(ctx, params)`, a
version it bumps when it changes the logic of its steps (part of every step's fingerprint),
how its result yields scores, and, as data, how to show its result (`ResultView`: which
field is the main text, which hold a plan, a tree, a transcript or flagged sentences). The
runtime, the API and the CLI use only this contract.

Built-in kinds are listed in BUILTIN_KINDS as "module:attribute"; a kind from another
installed package registers through the entry point group `longform.kinds`:

    [project.entry-points."longform.kinds"]
    shout = "my_package.shout:KIND"

Modules are imported on first use, so the API starts fast and a kind's heavy dependencies
load only where it runs.
"""
from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from functools import lru_cache
from importlib.metadata import entry_points
from typing import Annotated, Any, Awaitable, Callable

from pydantic import AfterValidator, BaseModel, SerializerFunctionWrapHandler, ValidationError, model_serializer

log = logging.getLogger(__name__)

def _instruction(value: str) -> str:
    value = value.strip()
    if not value:
        raise ValueError("instruction must not be empty")
    return value


def _model_name(value: str | None) -> str | None:
    if value is not None and not value.strip():
        raise ValueError("a model name must not be empty (leave it out for the server's model)")
    return value.strip() if value else value


# Param types kinds share: a writing instruction (stripped, not empty), a model name (None:
# the server's model; submit also checks that a server lists it, api/served_models.py).
Instruction = Annotated[str, AfterValidator(_instruction)]
ModelName = Annotated[str | None, AfterValidator(_model_name)]

ENTRY_POINT_GROUP = "longform.kinds"
BUILTIN_KINDS = {
    "chat": "agents.chat:KIND",
    "write": "agents.agentwrite:KIND",
    "lengthen": "agents.selflengthen:KIND",
    "summarize": "agents.summarize:KIND",
    "booookscore": "agents.booookscore:KIND",
    "dataset": "agents.dataset_kind:KIND",
    "solve": "agents.solve:KIND",
}


class AbsentStaysAbsent(BaseModel):
    """A base for result models whose optional keys appear only in some branches (a method's
    own counters, a tree node's optional parts): a field that was not given is left out of
    the dump, so `model_validate(d).model_dump(mode="json") == d` and stored results keep
    their exact shape."""

    @model_serializer(mode="wrap")
    def _leave_out_unset(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        for name in type(self).model_fields.keys() - self.model_fields_set:
            data.pop(type(self).model_fields[name].alias or name, None)
            data.pop(name, None)
        return data


class ResultView(BaseModel):
    """Which result fields the CLI and the admin UI show, and how. The first seven name a
    top-level field of the result, or are None when the kind has no such part; the last three
    say where a running job's partial result is in its stored steps. The admin UI renders one
    template per view type (api/admin/templates/views/) from these names only."""

    text: str | None = None  # the main text (printed by `longform result`)
    plan: str | None = None  # a list of planned parts
    tree: str | None = None  # a tree of nodes (summaries of summaries)
    transcript: str | None = None  # turns of a conversation or of a search
    flagged: str | None = None  # flagged sentences, each with its reasons
    stats: str | None = None  # a dict of counts (gate drops, a length histogram...)
    exports: str | None = None  # a dict whose keys are the formats the result exports as JSONL files
    # While the job runs (from its stored steps and progress events):
    plan_step: str | None = None  # "KEY.FIELD": the step whose output's FIELD is the plan, before the result
    parts_step: str | None = None  # "PREFIX*.FIELD": steps whose output FIELD is a part of the main text, in order
    node_step: str | None = None  # "FIELD": each tree node's id is a step key; that step output's FIELD is its text


@dataclass(frozen=True)
class Score:
    metric: str
    value: float | None
    detail: dict[str, Any] | None = None


def no_scores(_result: Any) -> list[Score]:
    return []


@dataclass(frozen=True)
class JobKind:
    name: str
    description: str
    params: type[BaseModel]
    result: type[BaseModel]
    run: Callable[[Any, Any], Awaitable[BaseModel | dict[str, Any]]]
    version: int = 1
    view: ResultView = field(default_factory=ResultView)
    scores: Callable[[Any], list[Score]] = no_scores  # called with the validated result model

    def validate_result(self, value: BaseModel | dict[str, Any]) -> BaseModel:
        """The result as this kind's model (raises ValidationError when it does not fit)."""
        if isinstance(value, self.result):
            return value
        data = value.model_dump(mode="json") if isinstance(value, BaseModel) else value
        return self.result.model_validate(data)

    def main_text(self, result: dict[str, Any] | None) -> str | None:
        if not self.view.text or not isinstance(result, dict):
            return None
        text = result.get(self.view.text)
        return text if isinstance(text, str) else None

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.name,
            "description": self.description,
            "version": self.version,
            "params_schema": self.params.model_json_schema(),
            "result_schema": self.result.model_json_schema(),
            "view": self.view.model_dump(),
        }


class UnknownKind(ValueError):
    pass


class InvalidParams(ValueError):
    def __init__(self, kind: str, errors: list[dict[str, Any]]):
        self.kind = kind
        self.errors = errors
        details = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ())) or 'params'}: {e.get('msg')}" for e in errors)
        super().__init__(f"invalid params for kind '{kind}': {details}")


@lru_cache(maxsize=1)
def kind_targets() -> dict[str, str]:
    """Every kind's name and where its declaration lives ("module:attribute")."""
    targets = dict(BUILTIN_KINDS)
    for point in entry_points(group=ENTRY_POINT_GROUP):
        if point.name in BUILTIN_KINDS:
            log.warning("entry point %s tries to replace the built-in kind %r; ignored", point.value, point.name)
            continue
        targets[point.name] = point.value
    return targets


def kind_names() -> list[str]:
    return sorted(kind_targets())


@lru_cache(maxsize=None)
def get_kind(name: str) -> JobKind:
    target = kind_targets().get(name)
    if target is None:
        raise UnknownKind(f"unknown job kind '{name}'; known kinds: {', '.join(kind_names())}")
    module, _, attribute = target.partition(":")
    kind = getattr(importlib.import_module(module), attribute)
    if not isinstance(kind, JobKind) or kind.name != name:
        raise TypeError(f"{target} must be a JobKind named {name!r}")
    return kind


def all_kinds() -> list[JobKind]:
    """Every kind that loads here (one whose package is broken is left out, with a warning)."""
    kinds = []
    for name in kind_names():
        try:
            kinds.append(get_kind(name))
        except Exception as exc:
            log.warning("job kind %r does not load: %s", name, exc)
    return kinds


def validation_context(settings: Any) -> dict[str, Any]:
    """What params models may check against: the settings and the limits they set."""
    return {"settings": settings, "max_target_words": settings.max_target_words}


def validate_params(kind_name: str, params: dict[str, Any], settings: Any) -> BaseModel:
    """Parse params with the kind's model; raises UnknownKind or InvalidParams with readable messages."""
    kind = get_kind(kind_name)
    try:
        return kind.params.model_validate(params, context=validation_context(settings))
    except ValidationError as exc:
        errors = [
            {"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors(include_url=False)
        ]
        raise InvalidParams(kind_name, errors) from None
