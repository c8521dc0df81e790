"""Shared pytest fixtures. The fake model server (fakellm) runs as a real HTTP subprocess."""
from __future__ import annotations

import pytest

from fakellm.runner import FakeServer


@pytest.fixture(scope="session")
def fake_llm_session():
    """One fake server for the whole session (defaults: no latency, no faults)."""
    server = FakeServer().start()
    yield server
    server.close()


@pytest.fixture
def fake_llm(fake_llm_session):
    """The session's fake server with fresh state for this test: default config, empty log,
    counters and prefix cache. Restarted (same port) if an earlier test killed it. Tests may
    change its config with .update(...); the next test gets the defaults back."""
    server = fake_llm_session
    if not server.alive:
        server.restart()
    server.reset(config=True)
    return server


@pytest.fixture
def fake_llm_factory():
    """make(**config) -> a new, started FakeServer of its own; all are stopped at teardown."""
    servers: list[FakeServer] = []

    def make(**config) -> FakeServer:
        server = FakeServer(**config).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()
