"""Model names a job may ask for: the ones its model servers list.

A param named `model` or `..._model` (`write_model`, `generator_model`, ...) picks a model of
the servers by name; on vLLM that is the base model or a LoRA adapter (`gen_sft`). A name no
server lists would fail the job later, so submit refuses it with a 422 naming the field. The
names come from each server's `GET /v1/models` (the configured LLM_ENDPOINTS, else the
embedded model's own server), kept for a short while. When no server answers, nothing is
refused here: the job checks the name itself when it starts.
"""
from __future__ import annotations

import re
import threading
import time
from typing import Any, Callable

import httpx
from pydantic import BaseModel

MODEL_PARAM = re.compile(r"(?:\w+_)?model")
CACHE_SECONDS = 30.0
TIMEOUT_SECONDS = 3.0


class UnservedModel(ValueError):
    def __init__(self, field: str, name: str, served: set[str]):
        listed = ", ".join(sorted(served)) or "none"
        super().__init__(f"params.{field}: no model server serves {name!r} (they serve: {listed})")


class ServedModels:
    """The union of the model names the servers list, fetched at most every CACHE_SECONDS."""

    def __init__(self, endpoints: Callable[[], list[str]], api_key: str = "EMPTY"):
        self._endpoints = endpoints
        self._api_key = api_key
        self._lock = threading.Lock()
        self._names: set[str] | None = None
        self._fetched = -CACHE_SECONDS

    def names(self) -> set[str] | None:
        """The served names; None when no server could be asked."""
        with self._lock:
            if time.monotonic() - self._fetched >= CACHE_SECONDS:
                self._names = self._fetch()
                self._fetched = time.monotonic()
            return self._names

    def _fetch(self) -> set[str] | None:
        names: set[str] = set()
        answered = False
        headers = {"Authorization": f"Bearer {self._api_key}"}
        for base in self._endpoints():
            try:
                response = httpx.get(f"{base.rstrip('/')}/models", headers=headers, timeout=TIMEOUT_SECONDS)
                response.raise_for_status()
                names |= {m["id"] for m in response.json().get("data", []) if isinstance(m, dict) and "id" in m}
                answered = True
            except (httpx.HTTPError, ValueError, AttributeError):
                continue
        return names if answered else None

    def check(self, params: BaseModel) -> None:
        """Raise UnservedModel for the first model param naming a model no server lists."""
        asked = [(field, value) for field, value in _model_fields(params) if value]
        if not asked:
            return
        served = self.names()
        if served is None:
            return
        for field, value in asked:
            if value not in served:
                raise UnservedModel(field, value, served)


def _model_fields(params: BaseModel) -> list[tuple[str, Any]]:
    return [
        (name, getattr(params, name))
        for name in type(params).model_fields
        if MODEL_PARAM.fullmatch(name) and isinstance(getattr(params, name), str)
    ]
