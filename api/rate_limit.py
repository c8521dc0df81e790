"""Per-key rate limits on the REST API (/v1), off by default (RATE_LIMIT_PER_MINUTE=0).

- Counted with the `limits` library's moving window (the one slowapi uses): at most N requests
  in any 60 seconds, with no double burst at a window edge as a fixed window allows.
- Keyed by the API key presented (its SHA-256, never the key itself, since the count may live in
  Redis), or by the client's address for requests without a key.
- Keys the API refuses (401) are also counted against the client's address: one made-up key
  per request would otherwise get a fresh count each time. Past N refusals in 60 seconds, that
  address's requests with a key get 429 until the window moves on (a valid key from the same
  address included: the middleware cannot tell keys apart without the database).
- Where the count lives (RATE_LIMIT_STORAGE): in this process's memory by default, which is right
  for one API process; with a Redis BROKER_URL the broker's Redis, so that every API replica
  behind a load balancer shares one count per key. Any URI of `limits` may be given (memory://,
  redis://..., redis+sentinel://...).
- Refused requests get 429 with a JSON `detail` and `Retry-After` in whole seconds (when the
  oldest counted request leaves the window).
- Not limited: /healthz, /readyz, /metrics (probes and scrapers), /docs and /openapi.json, and the
  admin UI (/admin: a person's pages poll fragments and hold an SSE stream, which would spend an
  API client's budget; keys are 256-bit random, so login attempts cannot guess one).
- When the storage fails (Redis down) requests pass, and a warning is logged at most once a minute:
  a broken limiter must not take the API down.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import time

from limits import RateLimitItemPerMinute
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

log = logging.getLogger("longform.api")

LIMITED_PREFIX = "/v1"
NAMESPACE = "longform-api"


def storage_uri(settings) -> str:
    """RATE_LIMIT_STORAGE, else the broker's Redis (several API processes share it), else memory."""
    if settings.rate_limit_storage:
        return settings.rate_limit_storage
    broker = settings.broker_url or ""
    if broker.startswith(("redis://", "rediss://", "redis+sentinel://")):
        return broker
    return "memory://"


def address(scope) -> str:
    client = scope.get("client")
    return "ip:" + (client[0] if client else "unknown")


def identity(scope) -> str:
    """Who a request counts against: its API key (hashed), else its client address."""
    headers = {k.lower(): v for k, v in scope.get("headers") or []}
    auth = headers.get(b"authorization", b"").decode("latin-1")
    key = auth[7:].strip() if auth.lower().startswith("bearer ") else headers.get(b"x-api-key", b"").decode("latin-1")
    if key:
        return "key:" + hashlib.sha256(key.encode()).hexdigest()[:32]
    return address(scope)


class RateLimit:
    """ASGI middleware: at most `per_minute` requests per identity under /v1."""

    def __init__(self, app, per_minute: int, storage: str = "memory://"):
        self.app = app
        self.item = RateLimitItemPerMinute(per_minute)
        self.per_minute = per_minute
        self.storage = storage_from_string(storage)
        self.limiter = MovingWindowRateLimiter(self.storage)
        # A network store is asked from a thread so a slow Redis never blocks the event loop.
        self.in_thread = not storage.startswith("memory")
        self._warned_at = -math.inf

    def _wait(self, who: str) -> float:
        reset_at, _remaining = self.limiter.get_window_stats(self.item, NAMESPACE, who)
        return max(reset_at - time.time(), 0.0)

    def _hit(self, who: str, refusals: str | None) -> tuple[float, str] | None:
        """Count one request. None: allowed; else the seconds until one is allowed again, and why."""
        if refusals is not None and not self.limiter.test(self.item, NAMESPACE, refusals):
            return self._wait(refusals), (f"too many requests with unknown API keys from this address: at most "
                                          f"{self.per_minute} a minute")
        if self.limiter.hit(self.item, NAMESPACE, who):
            return None
        return self._wait(who), f"rate limit exceeded: at most {self.per_minute} requests a minute per API key"

    async def _store(self, call, *args):
        """Ask the store; when it fails (Redis down) say so at most once a minute and answer None."""
        try:
            return await asyncio.to_thread(call, *args) if self.in_thread else call(*args)
        except Exception as exc:
            if time.monotonic() - self._warned_at > 60:
                self._warned_at = time.monotonic()
                log.warning("rate limit store unavailable, requests are not limited: %s: %s", type(exc).__name__, exc)
            return None

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not (path == LIMITED_PREFIX or path.startswith(LIMITED_PREFIX + "/")):
            return await self.app(scope, receive, send)
        who = identity(scope)
        refusals = "refused-keys:" + address(scope) if who.startswith("key:") else None
        blocked = await self._store(self._hit, who, refusals)
        if blocked is None:
            if refusals is None:
                return await self.app(scope, receive, send)

            async def watching_send(message):
                if message["type"] == "http.response.start" and message["status"] == 401:
                    await self._store(self.limiter.hit, self.item, NAMESPACE, refusals)
                await send(message)

            return await self.app(scope, receive, watching_send)
        wait, reason = blocked
        retry_after = max(1, math.ceil(wait))
        body = json.dumps({"detail": f"{reason}; retry in {retry_after} s"}).encode()
        await send({"type": "http.response.start", "status": 429, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(retry_after).encode()), (b"x-ratelimit-limit", str(self.per_minute).encode()),
            (b"x-ratelimit-remaining", b"0"),
        ]})
        await send({"type": "http.response.body", "body": body})


def install(app, settings) -> None:
    """Add the middleware when RATE_LIMIT_PER_MINUTE is set (outermost: a refused request costs
    no body read and no database query)."""
    if settings.rate_limit_per_minute > 0:
        app.add_middleware(RateLimit, per_minute=settings.rate_limit_per_minute, storage=storage_uri(settings))
