"""The registry of job kinds: each kind's params model and the agent that runs it.

Modules are imported on first use so that the API starts fast and a kind's heavy
dependencies load only where it runs.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from pydantic import BaseModel, ValidationError


@dataclass(frozen=True)
class Kind:
    name: str
    module: str  # exposes the params model and `async def run(ctx, params) -> dict`
    params_class: str
    description: str

    def params_model(self) -> type[BaseModel]:
        return getattr(importlib.import_module(self.module), self.params_class)

    def runner(self) -> Callable[..., Awaitable[dict[str, Any]]]:
        return getattr(importlib.import_module(self.module), "run")


KINDS: dict[str, Kind] = {
    k.name: k
    for k in [
        Kind("chat", "agents.chat", "ChatParams", "one model call with the given messages"),
        Kind("write", "agents.agentwrite", "WriteParams", "long-form writing (AgentWrite or single call)"),
        Kind("summarize", "agents.summarize", "SummarizeParams", "book summarization (hierarchical or incremental)"),
        Kind("booookscore", "agents.booookscore", "BooookScoreParams", "BooookScore coherence of a summary"),
        Kind("dataset", "workers.dataset", "DatasetParams", "batch-build an SFT dataset from write jobs"),
    ]
}


class UnknownKind(ValueError):
    pass


class InvalidParams(ValueError):
    def __init__(self, kind: str, errors: list[dict[str, Any]]):
        self.kind = kind
        self.errors = errors
        details = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ())) or 'params'}: {e.get('msg')}" for e in errors)
        super().__init__(f"invalid params for kind '{kind}': {details}")


def get_kind(name: str) -> Kind:
    try:
        return KINDS[name]
    except KeyError:
        raise UnknownKind(f"unknown job kind '{name}'; known kinds: {', '.join(sorted(KINDS))}") from None


def validation_context(settings: Any) -> dict[str, Any]:
    """What params models may check against: the settings and the limits they set."""
    return {"settings": settings, "max_target_words": settings.max_target_words}


def validate_params(kind_name: str, params: dict[str, Any], settings: Any) -> BaseModel:
    """Parse params with the kind's model; raises UnknownKind or InvalidParams with readable messages."""
    kind = get_kind(kind_name)
    try:
        return kind.params_model().model_validate(params, context=validation_context(settings))
    except ValidationError as exc:
        errors = [
            {"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors(include_url=False)
        ]
        raise InvalidParams(kind_name, errors) from None
