"""Rate limits (SPEC §5 429 RATE_LIMITED): the sliding-window counter on a real Redis, and its wiring
over HTTP — session creation per client address, H5 requests per session, shared by processes."""

from __future__ import annotations

import asyncio
import math
import time

import aiohttp
import pytest

from coordinator.core.errors import RateLimited
from coordinator.store import keys
from coordinator.store.ratelimit import RateLimiter
from coordinator.store.scripts import Scripts
from tests.support.app import ADMIN_TOKEN, bearer, services

SESSION_RATE = 3
H5_RATE = 4


def longest_wait(limit: int, window_s: int = 60) -> int:
    """The longest Retry-After a sliding window can give: the rest of this window, then until the
    full one before it has slid far enough out of view (a window's worth of requests counted at once)."""
    return window_s + math.ceil(window_s / limit)


@pytest.fixture
def settings(settings):
    """Small limits, so a test reaches them in a few requests."""
    return settings.model_copy(update={"session_rate_per_minute": SESSION_RATE, "h5_rate_per_minute": H5_RATE})


async def redis_ms(redis) -> int:
    """The Redis clock in ms."""
    seconds, micros = await redis.time()
    return seconds * 1000 + micros // 1000


async def fresh_address(redis) -> None:
    """Forget what earlier tests counted for 127.0.0.1 (the address key is shared by the session's Redis)."""
    await redis.delete(keys.rate_address("127.0.0.1"))


# --- the counter --------------------------------------------------------------------------


async def test_limit_refuses_the_request_past_it_and_says_how_long_to_wait(redis_client, uid):
    """With a limit of 3 per window, three requests pass and the fourth is RateLimited with retry_after >= 1 s."""
    scripts = Scripts.register(redis_client)
    limiter = RateLimiter(session_rate=3, h5_rate=3, window_ms=1000)
    for _ in range(3):
        await limiter.hit(scripts, f"tl:rl:test:{uid}", 3)
    with pytest.raises(RateLimited) as refused:
        await limiter.hit(scripts, f"tl:rl:test:{uid}", 3)
    assert 1 <= refused.value.retry_after <= 2
    assert refused.value.status == 429 and refused.value.code == "RATE_LIMITED"


async def test_waiting_retry_after_is_enough_and_refusals_are_not_counted(redis_client, uid):
    """A client that keeps getting refused, then waits the Retry-After it was given, gets through."""
    scripts = Scripts.register(redis_client)
    limiter = RateLimiter(session_rate=2, h5_rate=2, window_ms=1000)
    key = f"tl:rl:test:{uid}"
    await limiter.hit(scripts, key, 2)
    await limiter.hit(scripts, key, 2)
    retry_after = 0
    for _ in range(20):  # refused hammering must not push the wait further out
        with pytest.raises(RateLimited) as refused:
            await limiter.hit(scripts, key, 2)
        retry_after = max(retry_after, refused.value.retry_after)
    assert retry_after <= 2
    await asyncio.sleep(retry_after)
    await limiter.hit(scripts, key, 2)


async def test_window_slides_across_the_fixed_window_boundary(redis_client, uid):
    """A burst at the end of one window still counts just after the boundary (no double burst)."""
    scripts = Scripts.register(redis_client)
    limiter = RateLimiter(session_rate=3, h5_rate=3, window_ms=1000)
    key = f"tl:rl:test:{uid}"
    now = await redis_ms(redis_client)
    if now % 1000 > 600:  # start the burst early in a window so it surely ends before the boundary
        await asyncio.sleep((1000 - now % 1000) / 1000 + 0.01)
    for _ in range(3):
        await limiter.hit(scripts, key, 3)
    now = await redis_ms(redis_client)
    await asyncio.sleep((1000 - now % 1000 + 30) / 1000)  # 30 ms into the next window
    with pytest.raises(RateLimited):
        await limiter.hit(scripts, key, 3)


async def test_limits_of_different_keys_are_independent(redis_client, uid):
    """Exhausting one client's limit leaves another's untouched."""
    scripts = Scripts.register(redis_client)
    limiter = RateLimiter(session_rate=1, h5_rate=1, window_ms=60_000)
    await limiter.hit(scripts, f"tl:rl:test:{uid}:a", 1)
    with pytest.raises(RateLimited):
        await limiter.hit(scripts, f"tl:rl:test:{uid}:a", 1)
    await limiter.hit(scripts, f"tl:rl:test:{uid}:b", 1)


async def test_two_limiters_on_one_redis_share_the_count(redis_url, uid):
    """Two processes' limiters (two clients) count one client together."""
    from coordinator.store.redis_conn import open_redis

    first, second = await open_redis(redis_url), await open_redis(redis_url)
    try:
        a = RateLimiter(session_rate=4, h5_rate=4, window_ms=60_000)
        b = RateLimiter(session_rate=4, h5_rate=4, window_ms=60_000)
        on_first, on_second = Scripts.register(first), Scripts.register(second)
        key = f"tl:rl:test:{uid}"
        await asyncio.gather(*(limiter.hit(scripts, key, 4) for limiter, scripts in ((a, on_first), (b, on_second)) * 2))
        with pytest.raises(RateLimited):
            await a.hit(on_first, key, 4)
        with pytest.raises(RateLimited):
            await b.hit(on_second, key, 4)
    finally:
        await first.aclose()
        await second.aclose()


# --- over HTTP ----------------------------------------------------------------------------


async def test_session_creation_is_limited_per_client_address(client, shop):
    """POST /h5/sessions past session_rate_per_minute from one address is 429 RATE_LIMITED with Retry-After."""
    await fresh_address(services(client).redis)
    for _ in range(SESSION_RATE):
        resp = await client.post("/api/v1/h5/sessions", json={"qr_token": shop.qr})
        assert resp.status == 201
    resp = await client.post("/api/v1/h5/sessions", json={"qr_token": shop.qr})
    body = await resp.json()
    assert resp.status == 429 and body["error"]["code"] == "RATE_LIMITED"
    assert body["error"]["message"] == "请求过于频繁,请稍后再试"
    assert 1 <= int(resp.headers["Retry-After"]) <= longest_wait(SESSION_RATE)
    await fresh_address(services(client).redis)


async def test_forged_and_malformed_session_requests_count_too(client, shop):
    """Garbage and forged QR codes use up the address's allowance, so guessing codes is throttled."""
    await fresh_address(services(client).redis)
    statuses = []
    for body in (b"nope", b'{"qr_token": "qr~a~b~c"}', b"{}", b'{"qr_token": "x"}'):
        resp = await client.post("/api/v1/h5/sessions", data=body, headers={"Content-Type": "application/json"})
        statuses.append(resp.status)
    assert 429 not in statuses[:SESSION_RATE] and statuses[SESSION_RATE] == 429
    resp = await client.post("/api/v1/h5/sessions", json={"qr_token": shop.qr})
    assert resp.status == 429 and "Retry-After" in resp.headers
    await fresh_address(services(client).redis)


async def h5_session(client, shop) -> str:
    """A session token on the shop's table (the address count is reset around it)."""
    await fresh_address(services(client).redis)
    resp = await client.post("/api/v1/h5/sessions", json={"qr_token": shop.qr})
    assert resp.status == 201
    await fresh_address(services(client).redis)
    return (await resp.json())["session_token"]


async def test_h5_requests_are_limited_per_session(client, shop):
    """An H5 session past h5_rate_per_minute gets 429 with Retry-After; another session on the table does not."""
    first, second = await h5_session(client, shop), await h5_session(client, shop)
    for _ in range(H5_RATE):
        resp = await client.get("/api/v1/h5/table", headers=bearer(first))
        assert resp.status == 200
    resp = await client.get("/api/v1/h5/table", headers=bearer(first))
    assert resp.status == 429 and (await resp.json())["error"]["code"] == "RATE_LIMITED"
    assert 1 <= int(resp.headers["Retry-After"]) <= longest_wait(H5_RATE)
    resp = await client.post("/api/v1/h5/checkout/cancel", json={"token": "x"}, headers=bearer(first))
    assert resp.status == 429, "every H5 endpoint shares the session's allowance"
    resp = await client.get("/api/v1/h5/table", headers=bearer(second))
    assert resp.status == 200


async def test_staff_are_not_limited(client, shop):
    """ERP terminals and the admin are not rate limited (many more requests than the H5 limit pass)."""
    for _ in range(3 * H5_RATE):
        resp = await client.get(f"/api/v1/stores/{shop.store_id}/locks", headers=bearer(shop.a))
        assert resp.status == 200
        resp = await client.get("/api/v1/admin/stores", headers=bearer(ADMIN_TOKEN))
        assert resp.status == 200


async def test_openapi_declares_429(client):
    """Every operation of the OpenAPI document lists 429 with the error body."""
    doc = await (await client.get("/api/v1/openapi.json")).json()
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert "429" in op["responses"], f"{method} {path}"


def test_limit_holds_across_coordinator_processes(coordinators, redis_url):
    """Two coordinator processes count one client address together: the 4th session of 3 allowed is 429."""
    procs = coordinators(2, env={"TABLELOCK_SESSION_RATE_PER_MINUTE": str(SESSION_RATE)})

    async def scenario() -> None:
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        store = f"s-rl-{int(time.time() * 1000) % 10**9}"
        async with aiohttp.ClientSession(headers=admin) as http:
            base = procs[0].url + f"/api/v1/admin/stores/{store}"
            async with http.put(base, json={"name": "限流店"}) as r:
                assert r.status == 200
            async with http.put(f"{base}/tables/T1", json={"name": "一号桌"}) as r:
                qr = (await r.json())["qr_url"].split("qr=", 1)[1]
        statuses = []
        async with aiohttp.ClientSession() as http:
            for i in range(SESSION_RATE + 1):
                async with http.post(procs[i % 2].url + "/api/v1/h5/sessions", json={"qr_token": qr}) as r:
                    statuses.append((r.status, r.headers.get("Retry-After")))
        assert [s for s, _ in statuses[:SESSION_RATE]] == [201] * SESSION_RATE
        assert statuses[SESSION_RATE][0] == 429 and int(statuses[SESSION_RATE][1]) >= 1

    reset = _reset_address(redis_url)
    reset()
    try:
        asyncio.run(scenario())
    finally:
        reset()


def _reset_address(redis_url: str):
    """A function that deletes the 127.0.0.1 address count on ``redis_url`` (single node or cluster)."""
    from coordinator.store.redis_conn import open_redis

    async def reset() -> None:
        redis = await open_redis(redis_url)
        try:
            await fresh_address(redis)
        finally:
            await redis.aclose()

    return lambda: asyncio.run(reset())
