"""Jinja2 prompt templates, one file per agent step, and the loader.

Templates use strict undefined: a missing variable is an error, never an empty string.

A template's hash covers its own source and, recursively, every template it includes,
imports or extends, so a changed partial changes the hash of each template using it. Hashes
follow the files on disk (Jinja reloads a changed template; the hash is recomputed when a
file's modification time changes), so a step's fingerprint always names the prompt that
actually produced it.

A kind from another package may ship its own templates: `register_template_dir("mykind",
path)` makes `mykind/NAME.j2` render `path/NAME.j2`.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
import jinja2.meta

TEMPLATE_DIR = Path(__file__).parent
_extra_dirs: dict[str, Path] = {}


@dataclass(frozen=True)
class Rendered:
    text: str
    template: str
    template_hash: str  # sha256 of the template and every partial it uses, first 16 hex digits
    sources: dict[str, str]  # the source hash of the template and of each partial, by name


def register_template_dir(prefix: str, directory: str | Path) -> None:
    """Serve `prefix/NAME` from `directory/NAME` (templates shipped by another package)."""
    _extra_dirs[prefix] = Path(directory)
    _environment.cache_clear()
    _hashes.clear()


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    loaders: list[jinja2.BaseLoader] = [jinja2.FileSystemLoader(str(TEMPLATE_DIR))]
    if _extra_dirs:
        loaders.insert(0, jinja2.PrefixLoader({p: jinja2.FileSystemLoader(str(d)) for p, d in _extra_dirs.items()}))
    return jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=False,
        autoescape=False,
        auto_reload=True,
    )


def _source(name: str) -> tuple[str, str | None]:
    env = _environment()
    source, filename, _uptodate = env.loader.get_source(env, name)
    return source, filename


# name -> (the files of the template and its partials with their modification times,
#          the hash of each template's own source by name)
_hashes: dict[str, tuple[tuple[tuple[str, int], ...], dict[str, str]]] = {}


def _mtime(filename: str) -> int:
    try:
        return os.stat(filename).st_mtime_ns
    except OSError:
        return -1


def source_hashes(name: str) -> dict[str, str]:
    """The hash of the source of `name` and of every template it uses, by name, as the files
    are now (a stat per file when nothing changed)."""
    cached = _hashes.get(name)
    if cached is not None and all(_mtime(f) == t for f, t in cached[0]):
        return cached[1]
    files, hashes = [], {}
    for part in sorted(_closure(name)):
        source, filename = _source(part)
        hashes[part] = hashlib.sha256(source.encode()).hexdigest()[:16]
        if filename:
            files.append((filename, _mtime(filename)))
    _hashes[name] = (tuple(files), hashes)
    return hashes


def template_hash(name: str) -> str:
    """One hash of `name` and every template it uses."""
    return _combined(source_hashes(name))


def _combined(sources: dict[str, str]) -> str:
    joined = "".join(f"{part}\0{digest}\0" for part, digest in sorted(sources.items()))
    return hashlib.sha256(joined.encode()).hexdigest()[:16]


def _closure(name: str) -> set[str]:
    """The template and every template it includes, imports or extends, recursively."""
    found = {name}
    pending = [name]
    while pending:
        current = pending.pop()
        ast = _environment().parse(_source(current)[0], name=current)
        for ref in jinja2.meta.find_referenced_templates(ast):
            if ref is not None and ref not in found:
                found.add(ref)
                pending.append(ref)
    return found


def render(name: str, **variables: Any) -> Rendered:
    """Render `name` (a path under prompts/, e.g. "agentwrite/plan.j2")."""
    text = _environment().get_template(name).render(**variables).strip()
    sources = source_hashes(name)
    return Rendered(text=text, template=name, template_hash=_combined(sources), sources=sources)


def warm() -> None:
    """Compile every template now (a worker does it at start-up, not in its first jobs)."""
    env = _environment()
    for name in env.list_templates(filter_func=lambda n: n.endswith(".j2")):
        env.get_template(name)
        template_hash(name)
