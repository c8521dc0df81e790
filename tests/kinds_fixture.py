"""Register a job kind for one test, as an installed package's entry point would."""
from __future__ import annotations

from agents import kinds


def register_kind(monkeypatch, name: str, target: str) -> None:
    """Make `name` a kind declared at `target` ("module:attribute") until the test ends."""
    targets = {**kinds.kind_targets(), name: target}
    monkeypatch.setattr(kinds, "kind_targets", lambda: targets)
