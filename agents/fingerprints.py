"""Which stored steps no longer match the code, and which steps depend on them.

A step's fingerprint (agents.context.StepUsage.fingerprint) records the source hash of
every template it rendered and of each partial those include, the kind's version, the model
of each client it called and each call's sampling options. Before stored steps are reused
(a retry, a resumed job) they are compared with the code as it is now:

- templates: each recorded template or partial is hashed again from its file, the one the
  job's prompt overlay serves now (its set, PROMPTS_DIR, else the bundled file: `overlay`);
- the kind's version (a kind bumps it when it changes the logic of its steps);
- the models, where the caller knows the current ones (the worker does; the API does not).

Sampling options come from the job's params (fixed for a job) and from code that the
kind's version covers, so they are recorded but not compared. Steps stored before
fingerprints existed count as matching.

Dependence: a step can only have used another step's output if it started after that
step had finished. So the steps that depend on a stale step are the succeeded steps that
started at or after its end (a conservative rule: it may re-run a step that did not
actually use the output, never miss one that did).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import jinja2

import prompts


@dataclass(frozen=True)
class StoredStep:
    key: str
    fingerprint: dict[str, Any] | None
    started_at: datetime | None
    finished_at: datetime | None


def _current_hash(template: str, overlay: prompts.Overlay | None = None) -> str | None:
    try:
        return prompts.source_hashes(template, overlay)[template]
    except jinja2.TemplateNotFound:
        return None
    except jinja2.TemplateError:  # e.g. an overlay file with a syntax error: not the stored prompt
        return "unloadable"


def changes(fingerprint: dict[str, Any] | None, kind_version: int, models: dict[str, str] | None = None,
            overlay: prompts.Overlay | None = None) -> list[str]:
    """What differs between a stored fingerprint and the code now (empty: it matches)."""
    if not fingerprint:
        return []
    found = []
    for template, stored in sorted((fingerprint.get("templates") or {}).items()):
        current = _current_hash(template, overlay)
        if current is None:
            found.append(f"template {template} was removed")
        elif current != stored:
            found.append(f"template {template} changed")
    if fingerprint.get("version", kind_version) != kind_version:
        found.append(f"kind version {fingerprint.get('version')} -> {kind_version}")
    for role, stored in sorted((fingerprint.get("models") or {}).items()):
        current = (models or {}).get(role)
        if current and stored and current != stored:
            found.append(f"{role} model {stored} -> {current}")
    return found


def stale_steps(steps: list[StoredStep], kind_version: int, models: dict[str, str] | None = None,
                overlay: prompts.Overlay | None = None) -> list[dict[str, Any]]:
    """[{"key", "changed": [...]}] for every stored step that no longer matches."""
    out = []
    for step in steps:
        changed = changes(step.fingerprint, kind_version, models, overlay)
        if changed:
            out.append({"key": step.key, "changed": changed})
    return out


def with_dependents(steps: list[StoredStep], stale_keys: set[str]) -> set[str]:
    """The stale steps and every step that started at or after one of them finished."""
    ends = [s.finished_at for s in steps if s.key in stale_keys and s.finished_at is not None]
    if not ends:
        return set(stale_keys)
    first_end = min(ends)
    return set(stale_keys) | {s.key for s in steps if s.started_at is not None and s.started_at >= first_end}


def restamped(fingerprint: dict[str, Any] | None, kind_version: int, models: dict[str, str] | None = None,
              overlay: prompts.Overlay | None = None) -> dict[str, Any] | None:
    """The fingerprint as the code is now: what `reuse` stores for a stale step it keeps."""
    if not fingerprint:
        return fingerprint
    templates = {name: _current_hash(name, overlay) or "removed" for name in fingerprint.get("templates") or {}}
    known_models = {role: (models or {}).get(role) or name for role, name in (fingerprint.get("models") or {}).items()}
    parts = {k: v for k, v in fingerprint.items() if k not in ("hash", "origins")}
    parts.update(templates=templates, version=kind_version, models=known_models, reused=True)
    origins = {name: _current_origin(name, overlay) for name in templates}
    origins = {name: origin for name, origin in origins.items() if origin != prompts.BUNDLED}
    if origins:
        parts["origins"] = dict(sorted(origins.items()))
    return with_hash(parts)


def _current_origin(template: str, overlay: prompts.Overlay | None) -> str:
    try:
        return prompts.origin_of(template, overlay)
    except jinja2.TemplateNotFound:  # a name that would leave its directory
        return prompts.BUNDLED


def with_hash(parts: dict[str, Any]) -> dict[str, Any]:
    """The fingerprint's parts with "hash", one short digest of them all."""
    return {**parts, "hash": hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]}


def describe(stale: list[dict[str, Any]], limit: int = 10) -> str:
    shown = "; ".join(f"{s['key']} ({', '.join(s['changed'])})" for s in stale[:limit])
    more = f"; and {len(stale) - limit} more" if len(stale) > limit else ""
    return f"{len(stale)} stored steps no longer match the code: {shown}{more}"
