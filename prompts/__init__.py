"""Jinja2 prompt templates, one file per agent step, and the loader.

Templates use strict undefined: a missing variable is an error, never an empty string.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2

TEMPLATE_DIR = Path(__file__).parent


@dataclass(frozen=True)
class Rendered:
    text: str
    template: str
    template_hash: str  # sha256 of the template source, first 16 hex digits


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=False,
        autoescape=False,
    )


@lru_cache(maxsize=None)
def template_hash(name: str) -> str:
    source = (TEMPLATE_DIR / name).read_bytes()
    return hashlib.sha256(source).hexdigest()[:16]


def render(name: str, **variables: Any) -> Rendered:
    """Render `name` (a path under prompts/, e.g. "agentwrite/plan.j2")."""
    text = _environment().get_template(name).render(**variables).strip()
    return Rendered(text=text, template=name, template_hash=template_hash(name))


def warm() -> None:
    """Compile every template now (a worker does it at start-up, not in its first jobs)."""
    env = _environment()
    for name in env.list_templates(filter_func=lambda n: n.endswith(".j2")):
        env.get_template(name)
        template_hash(name)
