"""The admin UI's session: a signed cookie (HMAC-SHA256, stdlib only) holding a CSRF token and,
after a login, the id of the API key that logged in (never the key itself).

The cookie is HttpOnly, SameSite=Strict, scoped to /admin, Secure over HTTPS, and expires after
ADMIN_SESSION_HOURS. Each request re-reads the key row, so a revoked key logs its sessions out.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass, field

COOKIE = "longform_admin"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"


@dataclass
class UiSession:
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    key_id: str | None = None
    issued: float = field(default_factory=time.time)
    flash: list[list[str]] = field(default_factory=list)  # [level, message]: shown once
    dirty: bool = True  # the cookie must be (re)sent

    def as_dict(self) -> dict:
        return {"c": self.csrf, "k": self.key_id, "i": int(self.issued), "f": self.flash}

    def say(self, message: str, level: str = "info") -> None:
        self.flash.append([level, message[:500]])
        self.dirty = True

    def take_flash(self) -> list[list[str]]:
        messages, self.flash = self.flash, []
        if messages:
            self.dirty = True
        return messages

    def csrf_ok(self, presented: str | None) -> bool:
        return bool(presented) and hmac.compare_digest(presented.encode(), self.csrf.encode())


class SessionSigner:
    def __init__(self, secret: str, max_age_s: float):
        # Without a configured secret: a random one for this process (sessions end at restart).
        self.secret = (secret or secrets.token_urlsafe(32)).encode()
        self.max_age_s = max_age_s

    def _mac(self, payload: bytes) -> str:
        return base64.urlsafe_b64encode(hmac.new(self.secret, payload, hashlib.sha256).digest()).decode().rstrip("=")

    def dumps(self, session: UiSession) -> str:
        payload = base64.urlsafe_b64encode(json.dumps(session.as_dict(), separators=(",", ":")).encode()).decode().rstrip("=")
        return f"{payload}.{self._mac(payload.encode())}"

    def loads(self, value: str | None) -> UiSession | None:
        """The session a cookie holds, or None when it is missing, forged, malformed or expired."""
        if not value or "." not in value:
            return None
        payload, mac = value.rsplit(".", 1)
        if not hmac.compare_digest(mac.encode(), self._mac(payload.encode()).encode()):
            return None
        try:
            data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            session = UiSession(csrf=str(data["c"]), key_id=data.get("k"), issued=float(data["i"]),
                                flash=[[str(a), str(b)] for a, b in data.get("f") or []], dirty=False)
        except (ValueError, KeyError, TypeError):
            return None
        if time.time() - session.issued > self.max_age_s:
            return None
        return session
