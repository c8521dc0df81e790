"""Engine and sessions for SQLite (embedded) and PostgreSQL (production)."""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager, nullcontext
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.base import Executable


def normalize_url(url: str) -> str:
    """Use the psycopg 3 driver for plain postgresql:// URLs."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def make_engine(url: str) -> Engine:
    url = normalize_url(url)
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, pool_size=20, max_overflow=20)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # WAL: readers don't block the writer
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    engine = create_engine(url, pool_size=20, max_overflow=20)
    _ping_idle_connections(engine)
    return engine


# A pooled connection that sat idle may have been closed by a database restart or a proxy.
# SQLAlchemy's pool_pre_ping checks on every checkout, which costs a round trip per
# transaction; a busy worker checks out thousands a second. Only connections idle this long
# are checked (a failed check swaps in a new connection before anyone uses it).
IDLE_PING_SECONDS = 5.0


def _ping_idle_connections(engine: Engine) -> None:
    @event.listens_for(engine, "checkin")
    def _remember_checkin(_dbapi_conn, record):
        record.info["checked_in_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_conn, record, _proxy):
        if time.monotonic() - record.info.get("checked_in_at", float("inf")) < IDLE_PING_SECONDS:
            return
        try:
            with dbapi_conn.cursor() as cur:
                cur.execute("SELECT 1")
            dbapi_conn.rollback()  # end the transaction the check opened
        except Exception as exc:
            raise DisconnectionError(str(exc)) from exc


@lru_cache(maxsize=8)
def engine_for(url: str) -> Engine:
    return make_engine(url)


@lru_cache(maxsize=8)
def _sqlite_lock(url: str) -> threading.RLock:
    return threading.RLock()


class Database:
    """One engine and session factory per database URL."""

    def __init__(self, url: str):
        self.url = normalize_url(url)
        self.engine = engine_for(self.url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._autocommit = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        # Reads on PostgreSQL run without a transaction: under READ COMMITTED each statement
        # takes its own snapshot anyway, and autocommit saves the BEGIN and the ROLLBACK round
        # trips of every read session (on busy cores each round trip waits for a PostgreSQL
        # backend to be scheduled: bench/load.py).
        self._read_sessions = sessionmaker(self.engine if self.is_sqlite else self._autocommit, expire_on_commit=False)
        # SQLite has one writer at a time, and a thread that finds the file locked sleeps in
        # its busy handler (up to 100 ms a try). Within the process, threads take turns here
        # instead; other processes still meet the busy timeout.
        self._turns = _sqlite_lock(self.url) if self.is_sqlite else nullcontext()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits on success and rolls back on any error."""
        with self._turns, self._sessions() as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A session for reads only: it takes no writer turn (WAL readers never wait for the
        writer) and is never committed. Closing it ends its transaction; loaded objects stay
        readable (a rollback would expire them). On PostgreSQL it runs in autocommit mode."""
        with self._read_sessions() as session:
            yield session

    @contextmanager
    def writing(self) -> Iterator[Connection]:
        """A Core connection in one transaction, committed at the end (with the writer turn)."""
        with self._turns, self.engine.begin() as conn:
            yield conn

    def execute_autocommit(self, statement: Executable, params: dict[str, Any]) -> None:
        """Run one statement as its own transaction: no BEGIN/COMMIT round trips."""
        with self._turns, self._autocommit.connect() as conn:
            conn.execute(statement, params)

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite")
