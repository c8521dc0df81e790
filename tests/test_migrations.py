import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from db.models import Base
from db.schema import SchemaOutdated, current_revision, ensure_current, head_revision
from db.session import engine_for, normalize_url
from tests.db_fixtures import *  # noqa: F401,F403


def test_migrations_reach_head_and_match_the_models(database_url):
    assert current_revision(database_url) == head_revision(database_url)
    with engine_for(normalize_url(database_url)).connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []


def test_an_empty_database_is_refused_with_the_command_to_run(tmp_path):
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    with pytest.raises(SchemaOutdated, match="longform db upgrade"):
        ensure_current(url)
    ensure_current(url, auto_upgrade=True)
    assert current_revision(url) == head_revision(url)
