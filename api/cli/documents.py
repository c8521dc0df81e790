"""Documents: `upload`, and the helpers that let other commands take a file or `doc:ID`.

A file is checked here (UTF-8 text) before the API is asked anything."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from api.cli.base import CliFailure, cli, make_client, note


def read_utf8(path: str) -> bytes:
    """The file's bytes, refused with a clear message unless they are UTF-8 text."""
    data = Path(path).read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CliFailure(
            f"{path} is not UTF-8 text (invalid byte 0x{data[exc.start]:02x} at offset {exc.start}); "
            "convert it first, e.g. `iconv -f latin1 -t utf-8`",
            1,
        ) from None
    return data


def upload_file(ctx: click.Context, path: str, name: str | None, strip_gutenberg: bool) -> dict[str, Any]:
    """Upload a UTF-8 file and say so on stderr; returns the document."""
    content = read_utf8(path)
    document, new = make_client(ctx).upload_document(content, name=name or Path(path).name, strip_gutenberg=strip_gutenberg)
    stored = "uploaded" if new else "already stored"
    stripped = ", Project Gutenberg header and licence removed" if document.get("gutenberg_stripped") else ""
    note(f"document {document['id']} {stored}: {document['words']} words, {document['tokens']} tokens{stripped}")
    return document


@cli.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--name", help="Document name (default: the file name).")
@click.option("--strip-gutenberg", is_flag=True, help="Remove a Project Gutenberg header and licence.")
@click.pass_context
def upload(ctx, file, name, strip_gutenberg) -> None:
    """Upload a UTF-8 text document; prints its id, words and tokens."""
    document = upload_file(ctx, file, name, strip_gutenberg)
    click.echo(f"{document['id']}\t{document['words']} words\t{document['tokens']} tokens")


def resolve_document(ctx: click.Context, source: str, strip_gutenberg: bool) -> str:
    """`doc:ID` names a stored document; anything else is a file to upload."""
    if source.startswith("doc:"):
        return make_client(ctx).get_document(source[4:])["id"]
    if not Path(source).is_file():
        raise click.BadParameter(f"no such file: {source} (use doc:ID for a stored document)", param_hint="FILE")
    return upload_file(ctx, source, None, strip_gutenberg)["id"]
