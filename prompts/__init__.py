"""Jinja2 prompt templates, one file per agent step, and the loader.

Templates use strict undefined: a missing variable is an error, never an empty string.

A template's hash covers its own source and, recursively, every template it includes,
imports or extends, so a changed partial changes the hash of each template using it. Hashes
follow the files on disk (Jinja reloads a changed template; the hash is recomputed when a
file's modification time changes), so a step's fingerprint always names the prompt that
actually produced it.

A kind from another package may ship its own templates: `register_template_dir("mykind",
path)` makes `mykind/NAME.j2` render `path/NAME.j2`.

Overlays ("your prompts or ours"): an `Overlay` is a list of directories whose files replace
the templates of the same relative name, highest first: a job's named prompt set
(PROMPT_SETS_DIR/NAME, origin "set:NAME"), then PROMPTS_DIR (origin "PROMPTS_DIR"), then the
bundled files (origin "bundled"). Partials are looked up the same way, so an overlaid
`summarize/_guidelines.j2` changes every template that includes it. Every function that reads
a template takes `overlay=` (None: the bundled files); source hashes follow the file that is
actually served, so a changed overlay file makes the steps it produced stale. Names never
leave their directory (a `..` segment is refused) and a set name is one plain path segment.
"""
from __future__ import annotations

import hashlib
import os
import re
import stat
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import jinja2
import jinja2.meta
from jinja2.loaders import split_template_path

TEMPLATE_DIR = Path(__file__).parent
_extra_dirs: dict[str, Path] = {}

BUNDLED = "bundled"  # the origin of a template Longform ships
PROMPTS_DIR_ORIGIN = "PROMPTS_DIR"  # the origin of a file of the process-wide overlay
SET_ORIGIN_PREFIX = "set:"  # "set:NAME": the origin of a file of the job's prompt set
TEMPLATE_SUFFIXES = (".j2", ".txt")  # what counts as a template in a directory listing
# A set name is one path segment: letters, digits, _ . -, not starting with a dot (so never
# "." or "..", nor a hidden directory), at most 100 characters (the jobs.prompt_set column).
_SET_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}")


class UnknownPromptSet(LookupError):
    """A prompt set name that is not valid or not installed; `available` lists the sets."""

    def __init__(self, name: str, available: list[str]):
        self.name, self.available = name, available
        if not _SET_NAME.fullmatch(name or ""):
            reason = (f"invalid prompt set name {name!r}: use letters, digits, '_', '.' and '-' "
                      "(at most 100, not starting with '.')")
        else:
            reason = f"unknown prompt set {name!r}"
        listed = ", ".join(available) if available else "none (PROMPT_SETS_DIR has no set directories)"
        super().__init__(f"{reason}; available prompt sets: {listed}")


@dataclass(frozen=True)
class Overlay:
    """Directories whose files replace templates of the same relative name, highest first,
    each with the origin it gives a template ("set:NAME", "PROMPTS_DIR")."""

    layers: tuple[tuple[str, str], ...]  # (origin, absolute directory)
    prompt_set: str | None = None

    def candidates(self, name: str) -> list[tuple[str, str]]:
        """(origin, path) where `name` would be found, highest first. A name that would leave
        its directory ("..") raises TemplateNotFound, as Jinja's own loader does."""
        pieces = split_template_path(name)
        return [(origin, os.path.join(directory, *pieces)) for origin, directory in self.layers]

    def locate(self, name: str) -> tuple[str, str] | None:
        """(origin, path) of the overlay file that serves `name`, or None (served as bundled)."""
        for origin, path in self.candidates(name):
            if _is_file(path):
                return origin, path
        return None


def make_overlay(prompts_dir: str | None = None, sets_dir: str | None = None,
                 prompt_set: str | None = None) -> Overlay | None:
    """The overlay of a job: its set (must exist: UnknownPromptSet), then PROMPTS_DIR. None
    when neither is given (the bundled templates only)."""
    layers: list[tuple[str, str]] = []
    if prompt_set is not None:
        layers.append((SET_ORIGIN_PREFIX + prompt_set, str(prompt_set_dir(sets_dir, prompt_set))))
    if prompts_dir:
        layers.append((PROMPTS_DIR_ORIGIN, str(Path(prompts_dir).resolve())))
    return Overlay(tuple(layers), prompt_set) if layers else None


def prompt_sets(sets_dir: str | None) -> list[str]:
    """The names of the installed prompt sets (the valid subdirectories of `sets_dir`)."""
    if not sets_dir:
        return []
    try:
        entries = sorted(os.scandir(sets_dir), key=lambda e: e.name)
    except OSError:
        return []
    return [e.name for e in entries if _SET_NAME.fullmatch(e.name) and e.is_dir()]


def prompt_set_dir(sets_dir: str | None, name: str) -> Path:
    """The directory of set `name`, a direct subdirectory of `sets_dir`; UnknownPromptSet when
    the name is not a plain segment or no such set is installed."""
    if not isinstance(name, str) or not _SET_NAME.fullmatch(name) or not sets_dir:
        raise UnknownPromptSet(str(name), prompt_sets(sets_dir))
    base = Path(sets_dir).resolve()
    directory = base / name
    if directory.parent != base or not directory.is_dir():
        raise UnknownPromptSet(name, prompt_sets(sets_dir))
    return directory


def _is_file(path: str) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


@dataclass(frozen=True)
class Rendered:
    text: str
    template: str
    template_hash: str  # sha256 of the template and every partial it uses, first 16 hex digits
    sources: dict[str, str]  # the source hash of the template and of each partial, by name
    origin: str = "bundled"  # where the template's text came from (see agents.protocol)
    # The origin of the template and of each partial it uses, by name (as `sources`).
    origins: dict[str, str] = field(default_factory=dict)


def register_template_dir(prefix: str, directory: str | Path) -> None:
    """Serve `prefix/NAME` from `directory/NAME` (templates shipped by another package)."""
    _extra_dirs[prefix] = Path(directory)
    _environment.cache_clear()
    _hashes.clear()


class _OverlayLoader(jinja2.BaseLoader):
    """The overlay's files first, then the bundled loader. A template stays up to date while
    its file is unchanged and no file of a higher layer has appeared or gone."""

    def __init__(self, overlay: Overlay, base: jinja2.BaseLoader):
        self.overlay, self.base = overlay, base

    def get_source(self, environment: jinja2.Environment, template: str):
        candidates = [path for _origin, path in self.overlay.candidates(template)]
        for index, path in enumerate(candidates):
            if _is_file(path):
                seen = [(p, _mtime(p)) for p in candidates[: index + 1]]
                try:
                    with open(path, encoding="utf-8") as handle:
                        source = handle.read()
                except UnicodeDecodeError as exc:  # named by template, not by the server's path
                    raise jinja2.TemplateError(f"the overlay file of {template} is not UTF-8 ({exc.reason} "
                                               f"at byte {exc.start})") from None
                return source, path, lambda: all(_mtime(p) == t for p, t in seen)
        source, filename, base_uptodate = self.base.get_source(environment, template)
        absent = [(p, _mtime(p)) for p in candidates]

        def uptodate() -> bool:
            return all(_mtime(p) == t for p, t in absent) and (base_uptodate is None or base_uptodate())

        return source, filename, uptodate

    def list_templates(self) -> list[str]:
        return self.base.list_templates()


def _base_loader() -> jinja2.BaseLoader:
    loaders: list[jinja2.BaseLoader] = [jinja2.FileSystemLoader(str(TEMPLATE_DIR))]
    if _extra_dirs:
        loaders.insert(0, jinja2.PrefixLoader({p: jinja2.FileSystemLoader(str(d)) for p, d in _extra_dirs.items()}))
    return jinja2.ChoiceLoader(loaders)


@lru_cache(maxsize=64)
def _environment(overlay: Overlay | None = None) -> jinja2.Environment:
    """The bundled templates (overlay None), or the bundled ones under an overlay."""
    loader = _base_loader()
    return jinja2.Environment(
        loader=_OverlayLoader(overlay, loader) if overlay is not None else loader,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=False,
        autoescape=False,
        auto_reload=True,
    )


def _source(name: str, overlay: Overlay | None = None) -> tuple[str, str | None]:
    env = _environment(overlay)
    source, filename, _uptodate = env.loader.get_source(env, name)
    return source, filename


def _origin(filename: str | None, name: str, overlay: Overlay | None) -> str:
    """The origin of the file that served `name`."""
    if overlay is not None and filename:
        for origin, path in overlay.candidates(name):
            if path == filename:
                return origin
    return BUNDLED


# (overlay, name) -> (the files of the template and its partials with their modification
#   times, -1 for an overlay file that is absent; the hash of each template's own source by
#   name; the origin of each)
_hashes: dict[tuple[Overlay | None, str], tuple[tuple[tuple[str, int], ...], dict[str, str], dict[str, str]]] = {}


def _mtime(filename: str) -> int:
    try:
        return os.stat(filename).st_mtime_ns
    except OSError:
        return -1


def source_hashes(name: str, overlay: Overlay | None = None) -> dict[str, str]:
    """The hash of the source of `name` and of every template it uses, by name, as the files
    are now (a stat per file when nothing changed), under `overlay`."""
    return _sources_and_origins(name, overlay)[0]


def source_origins(name: str, overlay: Overlay | None = None) -> dict[str, str]:
    """The origin of `name` and of every template it uses, by name, under `overlay`."""
    return _sources_and_origins(name, overlay)[1]


def _sources_and_origins(name: str, overlay: Overlay | None) -> tuple[dict[str, str], dict[str, str]]:
    key = (overlay, name)
    cached = _hashes.get(key)
    if cached is not None and all(_mtime(f) == t for f, t in cached[0]):
        return cached[1], cached[2]
    files, hashes, origins = [], {}, {}
    for part in sorted(_closure(name, overlay)):
        if overlay is not None:  # a file appearing in (or leaving) a higher layer changes the hash
            files.extend((path, _mtime(path)) for _origin, path in overlay.candidates(part))
        source, filename = _source(part, overlay)
        hashes[part] = hashlib.sha256(source.encode()).hexdigest()[:16]
        origins[part] = _origin(filename, part, overlay)
        if filename:
            files.append((filename, _mtime(filename)))
    _hashes[key] = (tuple(files), hashes, origins)
    return hashes, origins


def template_hash(name: str, overlay: Overlay | None = None) -> str:
    """One hash of `name` and every template it uses."""
    return _combined(source_hashes(name, overlay))


def _combined(sources: dict[str, str]) -> str:
    joined = "".join(f"{part}\0{digest}\0" for part, digest in sorted(sources.items()))
    return hashlib.sha256(joined.encode()).hexdigest()[:16]


def is_plain_text(name: str) -> bool:
    """A `.txt` template is a reference implementation's own prompt file (a paper protocol's),
    filled the way that code fills it (`render_text`), never parsed as Jinja."""
    return name.endswith(".txt")


def _closure(name: str, overlay: Overlay | None = None) -> set[str]:
    """The template and every template it includes, imports or extends, recursively."""
    if is_plain_text(name):
        return {name}
    found = {name}
    pending = [name]
    while pending:
        current = pending.pop()
        ast = _environment(overlay).parse(_source(current, overlay)[0], name=current)
        for ref in jinja2.meta.find_referenced_templates(ast):
            if ref is not None and ref not in found:
                found.add(ref)
                pending.append(ref)
    return found


def render(name: str, overlay: Overlay | None = None, **variables: Any) -> Rendered:
    """Render `name` (a path under prompts/, e.g. "agentwrite/plan.j2"), from `overlay`'s
    file of that name where it has one."""
    text = _environment(overlay).get_template(name).render(**variables).strip()
    sources, origins = _sources_and_origins(name, overlay)
    return Rendered(text=text, template=name, template_hash=_combined(sources), sources=sources,
                    origin=origins[name], origins=origins)


def warm() -> None:
    """Compile every template now (a worker does it at start-up, not in its first jobs)."""
    env = _environment()
    for name in env.list_templates(filter_func=lambda n: n.endswith(".j2")):
        env.get_template(name)
        template_hash(name)


def render_text(name: str, fill: Callable[[str], str], overlay: Overlay | None = None) -> Rendered:
    """Render a plain-text template (`is_plain_text`): `fill` gets the file's text and fills
    it as the reference code does (`str.format` with its arguments, `$NAME$` replacement...),
    so a user's copy of the original file works unchanged (from `overlay`, where it has one)."""
    source, _ = _source(name, overlay)
    sources, origins = _sources_and_origins(name, overlay)
    # Not stripped: the reference sends the filled file as it is (a trailing newline included),
    # and a paper protocol's prompts must be byte-identical to the reference's.
    return Rendered(text=fill(source), template=name, template_hash=_combined(sources), sources=sources,
                    origin=origins[name], origins=origins)


# ---- what an overlay changes (`longform prompts list|show|diff`, GET /v1/prompts) -----------


@dataclass(frozen=True)
class Listed:
    """A template name as an overlay serves it."""

    name: str
    origin: str  # where its text comes from: "bundled", "PROMPTS_DIR" or "set:NAME"
    bundled: bool  # Longform ships a template of this name
    # "unused": an overlay file that matches no bundled template and no template includes (a
    # typo, or a file for another version); "partial": an overlay-only file a template
    # includes; "overlaid partial": a template whose own file is bundled but that includes an
    # overlaid one; else "". `problem`: why the effective template does not load (syntax error...).
    note: str = ""
    problem: str = ""


def template_source(name: str, overlay: Overlay | None = None) -> str:
    """The text of template `name` as it is served under `overlay` (None: the bundled one)."""
    return _source(name, overlay)[0]


def origin_of(name: str, overlay: Overlay | None = None) -> str:
    found = overlay.locate(name) if overlay is not None else None
    return found[0] if found else BUNDLED


def bundled_names() -> list[str]:
    """Every template Longform ships (and the registered kind template directories)."""
    return sorted(n for n in _base_loader().list_templates() if n.endswith(TEMPLATE_SUFFIXES))


def overlay_files(overlay: Overlay | None) -> dict[str, list[str]]:
    """Each file of the overlay's directories by relative name, with the layers (origins)
    holding it, highest first. Hidden files and directories are skipped."""
    found: dict[str, list[str]] = {}
    for origin, directory in overlay.layers if overlay is not None else ():
        for root, dirs, files in os.walk(directory):
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__pycache__")
            for filename in sorted(files):
                if not filename.startswith("."):
                    relative = os.path.relpath(os.path.join(root, filename), directory).replace(os.sep, "/")
                    found.setdefault(relative, []).append(origin)
    return found


def listing(overlay: Overlay | None = None) -> list[Listed]:
    """Every bundled template with the origin of its effective text, then the overlay files
    that match no bundled name (marked "partial" when an effective template includes them,
    else "unused")."""
    known = bundled_names()
    entries, used = [], set()
    for name in known:
        problem, origin, remark = "", origin_of(name, overlay), ""
        try:
            origins = source_origins(name, overlay)
        except jinja2.TemplateError as exc:
            problem = f"{type(exc).__name__}: {exc}"
        else:
            used |= set(origins)
            if origin == BUNDLED and any(o != BUNDLED for o in origins.values()):
                remark = "overlaid partial"
        entries.append(Listed(name, origin, True, note=remark, problem=problem))
    for name, origins in sorted(overlay_files(overlay).items()):
        if name not in known:
            entries.append(Listed(name, origins[0], False, note="partial" if name in used else "unused"))
    return entries
