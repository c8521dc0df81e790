"""Per-key rate limits on /v1 (RATE_LIMIT_PER_MINUTE): off by default; over the limit a key gets
429 with Retry-After while other keys go on; the window moves on; probes are never limited."""
from __future__ import annotations

import time

import httpx
import pytest

from agents.settings import Settings
from api import rate_limit
from db import repo
from db.session import Database
from tests.api_server import running_api
from tests.db_fixtures import sqlite_url


def make_settings(tmp_path, **overrides) -> Settings:
    return Settings(longform_data_dir=str(tmp_path), database_url=sqlite_url(tmp_path),
                    llm_endpoints="http://127.0.0.1:9/v1", **overrides)


def keys(settings: Settings, *names: str) -> list[str]:
    with Database(settings.database_url).session() as session:
        return [repo.create_api_key(session, name)[0] for name in names]


def test_off_by_default(tmp_path):
    settings = make_settings(tmp_path)
    assert settings.rate_limit_per_minute == 0
    with running_api(settings, run_worker=False) as url, httpx.Client(base_url=url) as client:
        statuses = {client.get("/v1/documents").status_code for _ in range(150)}
    assert statuses == {200}


def test_over_the_limit_a_key_gets_429_with_retry_after_and_other_keys_go_on(tmp_path):
    settings = make_settings(tmp_path, rate_limit_per_minute=5, require_api_keys="always")
    alice, bob = keys(settings, "alice", "bob")
    with running_api(settings, run_worker=False) as url, \
            httpx.Client(base_url=url, headers={"Authorization": f"Bearer {alice}"}) as a, \
            httpx.Client(base_url=url, headers={"X-API-Key": bob}) as b:
        assert [a.get("/v1/jobs").status_code for _ in range(5)] == [200] * 5
        refused = a.get("/v1/jobs")
        assert refused.status_code == 429
        assert refused.headers["content-type"] == "application/json"
        assert "rate limit" in refused.json()["detail"] and "5 requests a minute" in refused.json()["detail"]
        retry_after = refused.headers["retry-after"]
        assert retry_after.isdigit() and 1 <= int(retry_after) <= 60  # whole seconds
        # Every /v1 route and method counts against the same key; nothing is done for a refused one.
        assert a.post("/v1/documents", content=b"text", headers={"Content-Type": "text/plain"}).status_code == 429
        assert a.get("/v1/documents").json()["detail"].startswith("rate limit")
        # Another key has its own count.
        assert [b.get("/v1/jobs").status_code for _ in range(5)] == [200] * 5
        assert b.get("/v1/jobs").status_code == 429
        # Probes, scrapes and the admin UI are not limited.
        for path in ("/healthz", "/metrics", "/openapi.json", "/admin/login"):
            assert a.get(path).status_code == 200, path
        # The same key sent the other way (X-API-Key) is the same count.
        assert a.get("/v1/jobs", headers={"Authorization": "", "X-API-Key": alice}).status_code == 429


def test_requests_without_a_key_are_counted_by_address(tmp_path):
    settings = make_settings(tmp_path, rate_limit_per_minute=3)  # embedded on loopback: no key needed
    with running_api(settings, run_worker=False) as url, httpx.Client(base_url=url) as client:
        assert [client.get("/v1/kinds").status_code for _ in range(4)] == [200, 200, 200, 429]


def test_the_window_moves_on(monkeypatch):
    """The moving window: a refused key is served again once its oldest request is a minute old,
    and Retry-After says when (the clock is the limits library's, moved forward here)."""
    now = [1_000_000.0]
    monkeypatch.setattr(time, "time", lambda: now[0])
    seen = []

    async def app(scope, receive, send):
        seen.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    limiter = rate_limit.RateLimit(app, per_minute=2)
    scope = {"type": "http", "path": "/v1/jobs", "headers": [(b"authorization", b"Bearer lf_test")], "client": ("1.2.3.4", 1)}
    who = rate_limit.identity(scope)
    assert limiter._hit(who, None) is None
    now[0] += 20
    assert limiter._hit(who, None) is None
    now[0] += 10
    wait, _reason = limiter._hit(who, None)
    assert wait == pytest.approx(30, abs=1)  # the first request leaves the window 60 s after it was made
    now[0] += 31
    assert limiter._hit(who, None) is None  # one slot free again
    assert limiter._hit(who, None) is not None  # but only one


def test_made_up_keys_are_counted_against_their_address(tmp_path):
    """A new made-up key on every request would get a fresh count each time: the API's refusals
    (401) count against the client's address, and past the limit its keyed requests get 429."""
    settings = make_settings(tmp_path, rate_limit_per_minute=3, require_api_keys="always")
    [alice] = keys(settings, "alice")
    with running_api(settings, run_worker=False) as url, httpx.Client(base_url=url) as client:
        assert client.get("/v1/jobs", headers={"X-API-Key": alice}).status_code == 200  # a good key is no refusal
        statuses = [client.get("/v1/jobs", headers={"X-API-Key": f"lf_madeup{i:08d}"}).status_code for i in range(5)]
        assert statuses == [401, 401, 401, 429, 429]
        refused = client.get("/v1/jobs", headers={"X-API-Key": "lf_another_one_123"})
        assert refused.status_code == 429 and "unknown API keys" in refused.json()["detail"]
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert client.get("/healthz").status_code == 200


def test_the_storage_is_the_brokers_redis_unless_told(tmp_path):
    assert rate_limit.storage_uri(Settings(longform_data_dir=str(tmp_path))) == "memory://"
    with_broker = Settings(longform_data_dir=str(tmp_path), broker_url="redis://127.0.0.1:6379/0")
    assert rate_limit.storage_uri(with_broker) == "redis://127.0.0.1:6379/0"  # shared by every API replica
    chosen = Settings(longform_data_dir=str(tmp_path), broker_url="redis://127.0.0.1:6379/0",
                      rate_limit_storage="memory://")
    assert rate_limit.storage_uri(chosen) == "memory://"


def test_a_storage_that_fails_lets_requests_through(tmp_path):
    """Redis down: the API keeps answering (and warns), rather than refusing everyone."""
    settings = make_settings(tmp_path, rate_limit_per_minute=1, rate_limit_storage="redis://127.0.0.1:9/0")
    with running_api(settings, run_worker=False) as url, httpx.Client(base_url=url) as client:
        assert [client.get("/v1/kinds").status_code for _ in range(3)] == [200, 200, 200]


@pytest.mark.redis
def test_api_processes_sharing_redis_share_the_count(tmp_path):
    """Two API apps (as two replicas) with the same Redis: a key's requests count once across both."""
    import hashlib

    import redis

    url = "redis://127.0.0.1:6379/0"  # the shared server: only this test's keys are touched
    settings = make_settings(tmp_path, rate_limit_per_minute=4, rate_limit_storage=url, require_api_keys="always")
    (key,) = keys(settings, "alice")  # a fresh random key: a count of its own
    headers = {"Authorization": f"Bearer {key}"}
    with running_api(settings, run_worker=False) as one, running_api(settings, run_worker=False) as two:
        statuses = [httpx.get(f"{u}/v1/jobs", headers=headers).status_code for u in (one, two, one, two, one, two)]
    assert statuses == [200, 200, 200, 200, 429, 429]
    client = redis.Redis.from_url(url)
    ours = [k.decode() for k in client.scan_iter(match=f"*{hashlib.sha256(key.encode()).hexdigest()[:32]}*")]
    assert ours and not any(key.encode() in k for k in client.scan_iter(match="LIMITS:*longform-api*"))  # hashed, never the key
    client.delete(*ours)
    settings = make_settings(tmp_path, rate_limit_per_minute=4, rate_limit_storage=url, require_api_keys="always")
    (key,) = keys(settings, "alice")
    headers = {"Authorization": f"Bearer {key}"}
    with running_api(settings, run_worker=False) as one, running_api(settings, run_worker=False) as two:
        statuses = [httpx.get(f"{u}/v1/jobs", headers=headers).status_code for u in (one, two, one, two, one, two)]
    assert statuses == [200, 200, 200, 200, 429, 429]
    stored = [k.decode() for k in redis.Redis.from_url(url).keys("*")]
    assert stored and not any(key in k for k in stored)  # the count is under the key's hash, never the key
    redis.Redis.from_url(url).flushdb()
