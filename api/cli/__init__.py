"""The `longform` command line.

Local commands work on the database directly (`db`, `keys`, `config`) or start processes
(`serve`, `worker`). Every other command talks to the REST API at LONGFORM_URL (default
http://HOST:PORT from the settings), sends LONGFORM_API_KEY as a bearer token when set, and
first checks that the API answers (exit code 2 when it does not).

Output convention: what a command produces (a job id, a text, a table, JSON) goes to
stdout; notices, progress bars and scores of long-running commands go to stderr, so
`longform write "..." > essay.md` captures just the essay.

Layout: `base` holds the `cli` group and the shared helpers; each other module adds one group
of commands to it (`from api.cli.base import cli`) and never imports this package's
`__init__`. Importing `api.cli` imports them all, so `cli` is the whole command line.
"""
from __future__ import annotations

from api.cli import batch, database, documents, jobs, methods, processes, prompts  # noqa: F401  (they register their commands)
from api.cli.base import cli


def main() -> None:
    cli(prog_name="longform")


__all__ = ["cli", "main"]
