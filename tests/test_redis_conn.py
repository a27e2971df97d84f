"""open_redis against real servers: kind detection, Lua scripts with hash-tagged keys, reply shapes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError, RedisClusterException

from coordinator.redis_embedded import EmbeddedRedis
from coordinator.store.redis_conn import AnyRedis, is_cluster, open_redis
from tests.support.redis_servers import free_port

# KEYS[1], KEYS[2]: two keys of one store (same hash tag); ARGV[1]: a value.
# Returns {old value of KEYS[1] or false, new counter in KEYS[2]}.
SWAP_AND_COUNT = """
local old = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], ARGV[1])
return {old, redis.call('INCR', KEYS[2])}
"""


async def test_open_redis_detects_the_kind_of_server(redis_url: str, request: pytest.FixtureRequest) -> None:
    """A cluster node URL gives a RedisCluster client, a plain server a Redis client."""
    client = await open_redis(redis_url)
    try:
        expect_cluster = request.node.callspec.params["redis_url"] == "cluster"
        assert is_cluster(client) is expect_cluster
        assert isinstance(client, RedisCluster if expect_cluster else Redis)
        assert await client.ping()
    finally:
        await client.aclose()


async def test_registered_script_runs_on_hash_tagged_keys(redis_client: AnyRedis, uid: str) -> None:
    """register_script runs a multi-key script whose keys share a {store} hash tag, on both kinds."""
    script = redis_client.register_script(SWAP_AND_COUNT)
    keys = [f"{{s{uid}}}:order", f"{{s{uid}}}:fence"]
    assert await script(keys=keys, args=["a"]) == [None, 1]
    assert await script(keys=keys, args=["b"]) == [b"a", 2]


async def test_registered_script_survives_script_flush(redis_client: AnyRedis, uid: str) -> None:
    """After SCRIPT FLUSH (as after a Redis restart) the script is reloaded transparently."""
    script = redis_client.register_script(SWAP_AND_COUNT)
    keys = [f"{{t{uid}}}:a", f"{{t{uid}}}:b"]
    await script(keys=keys, args=["x"])
    await redis_client.script_flush()
    assert await redis_client.script_exists(script.sha) == [False]
    assert await script(keys=keys, args=["y"]) == [b"x", 2]


async def test_cluster_refuses_a_script_across_slots(redis_cluster_url: str, uid: str) -> None:
    """Keys without a common hash tag are refused by the cluster client before reaching Redis."""
    client = await open_redis(redis_cluster_url)
    try:
        script = client.register_script(SWAP_AND_COUNT)
        # Note: RedisClusterException is not a RedisError; catching RedisError would miss it.
        with pytest.raises(RedisClusterException, match="same key slot"):
            await script(keys=[f"a{uid}", f"b{uid}"], args=["x"])
    finally:
        await client.aclose()


async def test_replies_have_resp2_shapes(redis_client: AnyRedis, uid: str) -> None:
    """Replies are bytes in RESP2 shapes (XREAD is a list of [stream, entries]) on both kinds."""
    stream = f"{{s{uid}}}:events".encode()
    entry_id = await redis_client.xadd(stream, {b"name": b"lock.acquired"})
    assert isinstance(entry_id, bytes)
    assert await redis_client.xread({stream: b"0"}) == [[stream, [(entry_id, {b"name": b"lock.acquired"})]]]


async def test_unix_socket_urls_are_supported(tmp_path: Path) -> None:
    """A unix:// URL (the embedded Redis default) opens a plain client."""
    with EmbeddedRedis(tmp_path) as server:
        client = await open_redis(server.url)
        try:
            assert not is_cluster(client)
            assert await client.set(b"k", b"v") and await client.get(b"k") == b"v"
        finally:
            await client.aclose()


async def test_unreachable_redis_fails_fast() -> None:
    """Nothing listening at the URL raises ConnectionError within a couple of seconds."""
    started = time.monotonic()
    with pytest.raises(ConnectionError):
        await open_redis(f"redis://127.0.0.1:{free_port()}")
    assert time.monotonic() - started < 3
