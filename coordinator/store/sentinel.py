"""Reach a Redis primary through Redis Sentinel: parse the sentinel URL, open a client that follows failovers.

URL form (``TABLELOCK_REDIS_URL``)::

    redis+sentinel://[[user]:password@]host:port[,host:port...]/service_name[?db=N&sentinel_password=P]

The password (and user) are the data nodes'; ``sentinel_password`` is the sentinels' own, if they have one.

What a failover does to this client: commands sent while the primary is dead fail with a
ConnectionError (503 UNAVAILABLE at the API); each new connection asks the sentinels where the
primary is, so once they have promoted a replica the next command reaches it — no restart.
A connection still open to a primary that was demoted answers READONLY, which redis-py turns into
a ConnectionError and a reconnect (``SentinelManagedConnection.read_response``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from redis.asyncio import Redis
from redis.asyncio.sentinel import Sentinel

SCHEME = "redis+sentinel"


@dataclass(frozen=True)
class SentinelTarget:
    """Where the sentinels are, which service they watch, and how to log in to its nodes."""

    sentinels: tuple[tuple[str, int], ...]
    service_name: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None


def is_sentinel_url(url: str | None) -> bool:
    """Tell whether ``url`` names a primary behind Redis Sentinel."""
    return bool(url) and url.lower().startswith(f"{SCHEME}://")  # type: ignore[union-attr]


def parse_sentinel_url(url: str) -> SentinelTarget:
    """Parse ``redis+sentinel://[user:pass@]h1:p1,h2:p2/service[?db=N&sentinel_password=P]``."""
    parts = urlsplit(url)
    if parts.scheme.lower() != SCHEME:
        raise ValueError(f"not a {SCHEME}:// URL")
    userinfo, _, hosts = parts.netloc.rpartition("@")
    username = password = None
    if userinfo:
        user, _, secret = userinfo.partition(":")
        username, password = unquote(user) or None, unquote(secret) or None
    sentinels = []
    for item in hosts.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"sentinel address must be host:port, got {item!r}")
        sentinels.append((host.strip("[]"), int(port)))
    service = parts.path.strip("/")
    if not service:
        raise ValueError("the sentinel URL must name the service: redis+sentinel://host:26379/mymaster")
    query = parse_qs(parts.query)
    db = int(query.get("db", ["0"])[0])
    sentinel_password = query.get("sentinel_password", [None])[0]
    return SentinelTarget(tuple(sentinels), service, db, username, password, sentinel_password)


def _sentinel(target: SentinelTarget, options: dict[str, Any]) -> Sentinel:
    # The sentinels get the timeouts (a dead sentinel must not stall discovery) but not the
    # data nodes' password; RESP2 as everywhere else.
    sentinel_kwargs: dict[str, Any] = {
        "protocol": 2,
        "socket_connect_timeout": options.get("socket_connect_timeout"),
        "socket_timeout": options.get("socket_connect_timeout"),
    }
    if target.sentinel_password:
        sentinel_kwargs["password"] = target.sentinel_password
    return Sentinel(list(target.sentinels), sentinel_kwargs=sentinel_kwargs)


class PrimaryClient(Redis):
    """A client of the primary the sentinels name; closing it closes its sentinel connections too."""

    sentinel: Sentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        """Close the primary's connections, then the sentinels'."""
        await super().aclose(close_connection_pool)
        if self.sentinel is not None:
            await self.sentinel.aclose()


def primary_client(url: str, **options: Any) -> PrimaryClient:
    """Return a client of ``url``'s primary; each new connection asks the sentinels where it is now."""
    target = parse_sentinel_url(url)
    sentinel = _sentinel(target, options)
    client = sentinel.master_for(
        target.service_name, redis_class=PrimaryClient, db=target.db, username=target.username,
        password=target.password, **options,
    )
    client.sentinel = sentinel
    return client


def subscriber_client(url: str, **options: Any) -> Redis:
    """Return a client for a pub/sub listener: ``Redis.from_url``, or the primary's for a sentinel URL."""
    return primary_client(url, **options) if is_sentinel_url(url) else Redis.from_url(url, **options)


async def open_sentinel(url: str, options: dict[str, Any]) -> Redis:
    """Return a client of the primary that ``url``'s sentinels name, following failovers by itself."""
    client = primary_client(url, **options)
    try:
        await client.ping()  # fail at start-up, like a plain URL, if no primary is known
    except BaseException:
        await client.aclose()
        raise
    return client


async def current_primary_url(url: str) -> str:
    """Ask ``url``'s sentinels for the primary now and return it as a plain ``redis://`` URL.

    Raises ``redis.sentinel.MasterNotFoundError`` (a ConnectionError) while no primary is known,
    e.g. between the old primary's death and the promotion. A listener holding one connection
    (pub/sub) that wants a plain URL calls this before each (re)connect; ``subscriber_client``
    does the same without a URL.
    """
    target = parse_sentinel_url(url)
    sentinel = _sentinel(target, {"socket_connect_timeout": 1.0})
    try:
        host, port = await sentinel.discover_master(target.service_name)
    finally:
        await sentinel.aclose()
    auth = ""
    if target.password is not None:
        auth = f"{quote(target.username or '', safe='')}:{quote(target.password, safe='')}@"
    host = f"[{host}]" if ":" in host else host
    return f"redis://{auth}{host}:{port}/{target.db}"

