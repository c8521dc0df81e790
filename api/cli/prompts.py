"""`longform prompts list|show|diff`: which prompt texts a job would use, and how they differ
from Longform's bundled ones.

A job renders each template from, highest first: its prompt set (`--prompt-set NAME`, a
subdirectory of PROMPT_SETS_DIR), PROMPTS_DIR, then the bundled files. These commands read
the local files under this command's settings (the environment, --config): run them where
the workers run, or with the same PROMPTS_DIR and PROMPT_SETS_DIR. No API call.
"""
from __future__ import annotations

import difflib
import json
import os

import click
import jinja2
from rich.table import Table

import prompts
from api.cli.base import CliFailure, cli, load_settings, note, plain, stdout_console

NOTES = {
    "unused": "unused: no template of this name",
    "partial": "included by an overlaid template",
    "overlaid partial": "includes an overlaid partial",
}
SET_OPTION_HELP = "A prompt set (a subdirectory of PROMPT_SETS_DIR), as a job submitted with --prompt-set NAME sees it."


@cli.group("prompts")
def prompts_group() -> None:
    """The prompt templates: bundled, or overlaid by PROMPTS_DIR and named prompt sets."""


def _overlay(prompt_set: str | None) -> prompts.Overlay | None:
    settings = load_settings()
    try:
        return settings.prompt_overlay(prompt_set)
    except prompts.UnknownPromptSet as exc:
        raise CliFailure(f"{exc} (in {settings.prompt_sets_dir})", 2) from None


def _source(name: str, overlay: prompts.Overlay | None) -> str:
    try:
        return prompts.template_source(name, overlay)
    except jinja2.TemplateNotFound:
        where = "bundled" if overlay is None else "bundled or overlaid"
        raise CliFailure(f"no {where} template named {name!r} (`longform prompts list` shows them)", 1) from None


def _origin(name: str, overlay: prompts.Overlay | None) -> str:
    try:
        return prompts.origin_of(name, overlay)
    except jinja2.TemplateNotFound:  # a name that would leave its directory
        raise CliFailure(f"no template named {name!r} (`longform prompts list` shows them)", 1) from None


@prompts_group.command("list")
@click.option("--set", "prompt_set", metavar="NAME", help=SET_OPTION_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the listing as JSON.")
def list_prompts(prompt_set: str | None, as_json: bool) -> None:
    """Every template with where its text comes from (bundled, PROMPTS_DIR, set:NAME); overlay
    files that match no template are flagged "unused" (a misspelt name is never rendered)."""
    settings = load_settings()
    overlay = _overlay(prompt_set)
    entries = prompts.listing(overlay)
    sets = prompts.prompt_sets(settings.prompt_sets_dir)
    if settings.prompts_dir and not os.path.isdir(settings.prompts_dir):
        note(f"PROMPTS_DIR {settings.prompts_dir} is not a directory: nothing is overlaid from it")
    if as_json:
        click.echo(json.dumps({
            "prompts_dir": settings.prompts_dir or None,
            "prompt_sets_dir": settings.prompt_sets_dir,
            "prompt_sets": sets,
            "prompt_set": prompt_set,
            "items": [{"name": e.name, "origin": e.origin, "bundled": e.bundled, "note": e.note or None,
                       "problem": e.problem or None} for e in entries],
        }, indent=2))
        return
    table = Table("template", "origin", "note", caption=_caption(entries))
    for entry in entries:
        remark = entry.problem or NOTES.get(entry.note, entry.note)
        table.add_row(*plain(entry.name, entry.origin if entry.note != "unused" else f"({entry.origin})", remark))
    stdout_console().print(table)
    note(f"PROMPTS_DIR: {settings.prompts_dir or '(not set)'}")
    note(f"prompt sets in {settings.prompt_sets_dir}: {', '.join(sets) if sets else 'none'}")


def _caption(entries: list[prompts.Listed]) -> str:
    served = [e for e in entries if e.note != "unused"]
    overlaid = sum(1 for e in served if e.origin != prompts.BUNDLED)
    unused = len(entries) - len(served)
    problems = sum(1 for e in entries if e.problem)
    caption = f"{len(served)} templates, {overlaid} overlaid"
    if unused:
        caption += f"; {unused} unused overlay file{'s' if unused != 1 else ''}"
    if problems:
        caption += f"; {problems} that do not load"
    return caption


@prompts_group.command("show")
@click.argument("name")
@click.option("--set", "prompt_set", metavar="NAME", help=SET_OPTION_HELP)
@click.option("--bundled", is_flag=True, help="The bundled text, whatever overlays it.")
def show_prompt(name: str, prompt_set: str | None, bundled: bool) -> None:
    """Print the text of template NAME (e.g. summarize/chunk.j2) as a job would get it."""
    if bundled and prompt_set:
        raise click.UsageError("use either --bundled or --set, not both")
    overlay = None if bundled else _overlay(prompt_set)
    text = _source(name, overlay)
    note(f"{name}: {_origin(name, overlay)}")
    click.echo(text, nl=not text.endswith("\n"))


@prompts_group.command("diff")
@click.argument("name")
@click.option("--set", "prompt_set", metavar="NAME", help=SET_OPTION_HELP)
def diff_prompt(name: str, prompt_set: str | None) -> None:
    """A unified diff of template NAME: the bundled text against the one a job would get."""
    overlay = _overlay(prompt_set)
    effective = _source(name, overlay)
    origin = _origin(name, overlay)
    try:
        bundled = prompts.template_source(name)
    except jinja2.TemplateNotFound:
        bundled, from_file = "", "/dev/null"
        note(f"{name}: no bundled template of this name (the {origin} file is new)")
    else:
        from_file = f"bundled/{name}"
    if origin == prompts.BUNDLED:
        click.echo(f"{name}: not overlaid (the bundled text is used)")
        return
    if bundled == effective:
        click.echo(f"{name}: the {origin} file is the same as the bundled one")
        return
    lines = difflib.unified_diff(bundled.splitlines(keepends=True), effective.splitlines(keepends=True),
                                 fromfile=from_file, tofile=f"{origin}/{name}")
    for line in lines:
        click.echo(line, nl=not line.endswith("\n"))
        if not line.endswith("\n"):
            click.echo("\\ No newline at end of file")
