"""Schema version checks and upgrades through Alembic (the only way a schema is created)."""
from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from db.session import engine_for, normalize_url

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


class SchemaOutdated(RuntimeError):
    pass


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    return config


def head_revision(url: str) -> str:
    return ScriptDirectory.from_config(alembic_config(url)).get_current_head()


def current_revision(url: str) -> str | None:
    with engine_for(normalize_url(url)).connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def ensure_current(url: str, auto_upgrade: bool = False) -> None:
    """Refuse to run on an outdated schema, or upgrade it when asked to."""
    current, head = current_revision(url), head_revision(url)
    if current == head:
        return
    if auto_upgrade:
        upgrade(url)
        return
    raise SchemaOutdated(
        f"database schema is at {current or 'nothing (empty database)'}, code needs {head}: "
        "run `longform db upgrade` (or start with --upgrade)"
    )
