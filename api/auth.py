"""API keys: `Authorization: Bearer <key>` (or `X-API-Key`). Keys are stored hashed.

Embedded mode bound to loopback may run open (requests without a key act as the local
admin). Any other bind address, and production mode, require a key. A key sees only
its own jobs and documents unless it is an admin key.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from fastapi import Depends, HTTPException, Request

from api.state import AppState, get_state
from db import repo


@dataclass(frozen=True)
class Principal:
    owner: str  # the key id, or "local" in open mode
    is_admin: bool

    def can_see(self, owner: str) -> bool:
        return self.is_admin or self.owner == owner


LOCAL_ADMIN = Principal(owner="local", is_admin=True)


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def auth_required(settings) -> bool:
    if settings.require_api_keys == "always":
        return True
    return not (settings.embedded_mode and is_loopback(settings.host))


def _presented_key(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip() or None
    return request.headers.get("x-api-key") or None


def principal(request: Request, state: AppState = Depends(get_state)) -> Principal:
    key = _presented_key(request)
    if key is None:
        if state.auth_required:
            raise HTTPException(401, "an API key is required: send `Authorization: Bearer <key>` (create one with `longform keys create NAME`)")
        return LOCAL_ADMIN
    # A read-only lookup (no transaction round trips on PostgreSQL); the write of last_used_at,
    # at most once a minute per key, gets its own short transaction.
    with state.db.reading() as session:
        row = repo.find_api_key(session, key)
    if row is None:
        raise HTTPException(401, "invalid or revoked API key")
    if repo.key_use_is_stale(row):
        with state.db.session() as session:
            repo.record_key_use(session, row.id)
    return Principal(owner=row.id, is_admin=row.is_admin)
