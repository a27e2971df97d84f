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
    urls = [url]
    for node in client.get_nodes():
        other = _node_url(url, node.host, node.port)
        if other not in urls:
            urls.append(other)
    return urls


def _node_url(url: str, host: str, port: int) -> str:
    """``url`` (scheme, credentials, options) pointed at another node."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    host = f"[{host}]" if ":" in host else host
    netloc = f"{userinfo}@{host}:{port}" if userinfo else f"{host}:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))


async def sharded_pubsub(client: AnyRedis) -> bool:
    """Whether live events go on shard channels: a Redis Cluster whose nodes run Redis 7 or later."""
    if not is_cluster(client):
        return False  # one node: a plain channel reaches only its subscribers anyway
    versions = await client.execute_command("INFO", "server", target_nodes=RedisCluster.ALL_NODES)
    majors = [int(str(info.get("redis_version", "0")).split(".")[0]) for info in versions.values()]
    return bool(majors) and min(majors) >= 7


class ShardMap:
    """Where a shard channel is served: the URL of the primary owning its slot (SSUBSCRIBE goes there)."""

    def __init__(self, url: str, client: RedisCluster) -> None:
        self._url = url
        self._client = client

    def url_for(self, channel: bytes) -> str:
        """The URL of the node serving ``channel``'s slot, as this process last learnt the slots."""
        node = self._client.get_node_from_key(channel)
        return _node_url(self._url, node.host, node.port)

    async def refresh(self) -> None:
        """Learn the slots again (after a failover or a moved slot)."""
        await self._client.nodes_manager.initialize()
