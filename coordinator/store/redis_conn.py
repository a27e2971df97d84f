"""Open the coordinator's Redis client: a plain server or a Redis Cluster, told apart by asking it."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError, ResponseError

from coordinator.store.sentinel import is_sentinel_url, open_sentinel

AnyRedis = Redis | RedisCluster

CONNECT_TIMEOUT = 1.0
OPERATION_TIMEOUT = 2.0
HEALTH_CHECK_INTERVAL = 10
MAX_CONNECTIONS = 256
POOL_WAIT = OPERATION_TIMEOUT
CLUSTER_MAX_CONNECTIONS = 2048


def _client_options(socket_timeout: float | None) -> dict[str, Any]:
    return {
        "decode_responses": False,
        # redis-py 8 defaults to RESP3, which reshapes replies (XREAD, HGETALL, CLUSTER ...).
        # Pin RESP2 so every module sees the same shapes on every server.
        "protocol": 2,
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "socket_timeout": socket_timeout,
        "health_check_interval": HEALTH_CHECK_INTERVAL,
        # One quick retry, only on a broken connection (e.g. Redis restarted while we idled).
        # Never on TimeoutError: the script may already have run, and a silent second run is a
        # second grant attempt the caller did not ask for.
        "retry": Retry(ExponentialBackoff(cap=0.2, base=0.02), 1, supported_errors=(ConnectionError,)),
    }


async def open_redis(url: str, *, socket_timeout: float | None = OPERATION_TIMEOUT) -> AnyRedis:
    """Connect to `url` (redis://, rediss://, unix:// or redis+sentinel://); a cluster client for a cluster node.

    `socket_timeout` bounds every command; blocking reads (XREAD BLOCK, pub/sub listen) longer
    than it need their own client opened with a larger value or None.
    """
    options = _client_options(socket_timeout)
    if is_sentinel_url(url):
        return await open_sentinel(url, options)
    # A burst of requests must queue for a connection, not fail: redis-py's default pool raises
    # MaxConnectionsError past 100 commands in flight. The blocking pool waits (bounded).
    pool = BlockingConnectionPool.from_url(url, max_connections=MAX_CONNECTIONS, timeout=POOL_WAIT, **options)
    plain = Redis.from_pool(pool)
    try:
        info = await plain.info("cluster")
    except ResponseError:
        info = {}  # INFO disabled (some managed Redis): only plain servers do that
    except BaseException:
        await plain.aclose()
        raise
    if not info.get("cluster_enabled"):
        return plain
    await plain.aclose()
    if url.startswith("unix:"):
        raise ValueError("a Redis Cluster cannot be used over a unix socket; give a redis:// URL")
    # The async cluster client has no blocking pool; give each node room for a burst instead.
    cluster = RedisCluster.from_url(url, max_connections=CLUSTER_MAX_CONNECTIONS, **options)
    try:
        await cluster.initialize()
    except BaseException:
        await cluster.aclose()
        raise
    return cluster


def is_cluster(client: AnyRedis) -> bool:
    """Tell whether `client` talks to a Redis Cluster."""
    return isinstance(client, RedisCluster)


def subscriber_urls(url: str, client: AnyRedis) -> list[str]:
    """Where a pub/sub subscriber may connect: ``url``, then (for a cluster) every other node.

    redis-py's asyncio RedisCluster has no pub/sub; a cluster forwards PUBLISH to every node,
    so a plain client on any node hears everything. IPv6 hosts are bracketed.
    """
    if not is_cluster(client):
        return [url]
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    urls = [url]
    for node in client.get_nodes():
        host = f"[{node.host}]" if ":" in node.host else node.host
        netloc = f"{userinfo}@{host}:{node.port}" if userinfo else f"{host}:{node.port}"
        other = urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
        if other not in urls:
            urls.append(other)
    return urls
