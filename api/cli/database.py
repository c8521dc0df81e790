"""Local database commands: `db` (schema migrations) and `keys` (API keys)."""
from __future__ import annotations

import contextlib
from datetime import datetime

import click
from rich.table import Table

from api.cli.base import CliFailure, check_schema, cli, load_settings, note, plain, short_time, stdout_console


@cli.group()
def db() -> None:
    """Database schema (Alembic migrations)."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Upgrade the database schema to the newest version."""
    from db.schema import current_revision, head_revision, upgrade

    settings = load_settings()
    before = current_revision(settings.database_url)
    upgrade(settings.database_url)
    after, head = current_revision(settings.database_url), head_revision(settings.database_url)
    url = settings.public_view()["database_url"]
    if before == after:
        click.echo(f"{url}: already at {after} (head)")
    else:
        click.echo(f"{url}: upgraded from {before or 'empty'} to {after}" + ("" if after == head else f" (head is {head})"))


@db.command("current")
def db_current() -> None:
    """Show the schema version of the database and the one the code needs."""
    from db.schema import current_revision, head_revision

    settings = load_settings()
    current, head = current_revision(settings.database_url), head_revision(settings.database_url)
    click.echo(f"current: {current or 'none (empty database)'}")
    click.echo(f"head:    {head}")
    click.echo("up to date" if current == head else "outdated: run `longform db upgrade`")


# ---- API keys --------------------------------------------------------------------------------


@cli.group()
def keys() -> None:
    """API keys (local database commands)."""


@contextlib.contextmanager
def local_session():
    from db.session import Database

    settings = load_settings()
    check_schema(settings)
    with Database(settings.database_url).session() as session:
        yield session


@keys.command("create")
@click.argument("name")
@click.option("--admin", is_flag=True, help="The key may see and manage every owner's jobs.")
def keys_create(name: str, admin: bool) -> None:
    """Create an API key; the key is printed once and never stored."""
    from db import repo

    with local_session() as session:
        plain, row = repo.create_api_key(session, name, is_admin=admin)
        key_id, prefix = row.id, row.prefix
    click.echo(plain)
    note(
        f"created {'admin ' if admin else ''}key {key_id} '{name}' (prefix {prefix}); "
        "it is shown only now: store it (e.g. LONGFORM_API_KEY)")


@keys.command("list")
def keys_list() -> None:
    """List API keys (prefixes only)."""
    from db import repo

    table = Table("id", "name", "prefix", "admin", "created", "last used", "revoked")
    with local_session() as session:
        for row in repo.list_api_keys(session):
            table.add_row(*plain(
                row.id, row.name, row.prefix, "yes" if row.is_admin else "",
                _db_time(row.created_at), _db_time(row.last_used_at), _db_time(row.revoked_at) if row.revoked_at else "",
            ))
    stdout_console().print(table)


@keys.command("revoke")
@click.argument("id_or_prefix")
def keys_revoke(id_or_prefix: str) -> None:
    """Revoke an API key by id or prefix."""
    from db import repo

    with local_session() as session:
        row = repo.revoke_api_key(session, id_or_prefix)
        if row is None:
            raise CliFailure(f"no API key with id or prefix '{id_or_prefix}'")
        click.echo(f"revoked key {row.id} '{row.name}' ({row.prefix})")


def _db_time(value: datetime | None) -> str:
    return short_time(value.isoformat()) if value is not None else "-"
