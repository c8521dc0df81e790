"""Fresh, migrated databases for tests: a SQLite file, or a new PostgreSQL database.

Import the fixtures into a test module with `from tests.db_fixtures import *`.
"""
from __future__ import annotations

import os
import uuid

import pytest
import sqlalchemy as sa

from db.schema import upgrade

POSTGRES_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def sqlite_url(tmp_path) -> str:
    url = f"sqlite:///{tmp_path / 'longform.db'}"
    upgrade(url)
    return url


def _postgres_database():
    name = f"longform_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        pytest.fail(f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL}: {exc}")
    url = POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    upgrade(url)
    return admin, name, url


def _drop(admin, name: str) -> None:
    from db.session import engine_for, normalize_url

    url = POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    engine_for(normalize_url(url)).dispose()
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def postgres_url():
    admin, name, url = _postgres_database()
    yield url
    _drop(admin, name)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request, tmp_path):
    """Each test using this runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        yield sqlite_url(tmp_path)
        return
    admin, name, url = _postgres_database()
    yield url
    _drop(admin, name)
