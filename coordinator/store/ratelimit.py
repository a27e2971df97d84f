"""Rate limits (SPEC §5 ``429 RATE_LIMITED``), counted in Redis so they hold across processes.

Two limits, both per minute from the process settings:

* ``POST /h5/sessions`` (the only public endpoint) per client address — a scanner cannot mint
  sessions in bulk: ``session_rate_per_minute``;
* every request of an H5 session per session — a diner's page cannot hammer the ERP through
  checkout, items or menu: ``h5_rate_per_minute``.

ERP terminals and the admin are trusted staff and are not limited here.

The count is a sliding-window estimate kept in one Redis hash per limited client
(``lua/ratelimit.lua``), on the Redis clock; a refused request is not counted and carries the
seconds to wait (``Retry-After``). The address is the TCP peer (``request.remote``): behind a
reverse proxy, configure aiohttp's forwarded-header handling so that it is the client's.
"""

from __future__ import annotations

import math
from importlib import resources
from typing import Any

from aiohttp import web

from coordinator.core.errors import RateLimited
from coordinator.store import keys
from coordinator.store.auth import Principal

WINDOW_MS = 60_000
_SOURCE = (resources.files("coordinator.store") / "lua" / "ratelimit.lua").read_text()


class RateLimiter:
    """Sliding-window request limits on one Redis (single node or cluster)."""

    def __init__(self, *, session_rate: int, h5_rate: int, window_ms: int = WINDOW_MS) -> None:
        self.session_rate = session_rate
        self.h5_rate = h5_rate
        self.window_ms = window_ms
        self._redis: Any = None
        self._script: Any = None

    def _bound(self, redis: Any) -> Any:
        # register_script binds the script to one client: bind again if the client changed.
        if self._redis is not redis:
            self._redis, self._script = redis, redis.register_script(_SOURCE)
        return self._script

    async def hit(self, redis: Any, key: str, limit: int) -> None:
        """Count one request under ``key``; raise RateLimited(retry_after seconds) past ``limit``."""
        allowed, retry_ms = await self._bound(redis)(keys=[key], args=[self.window_ms, limit])
        if not int(allowed):
            raise RateLimited(max(1, math.ceil(int(retry_ms) / 1000)))

    async def session_creation(self, redis: Any, address: str) -> None:
        """Count one ``POST /h5/sessions`` from ``address``."""
        await self.hit(redis, keys.rate_address(address), self.session_rate)

    async def h5_request(self, redis: Any, principal: Principal) -> None:
        """Count one request of an H5 session."""
        await self.hit(redis, keys.rate_session(principal.store_id or "", principal.session_id or ""), self.h5_rate)


RATE_LIMITER = web.AppKey("rate_limiter", RateLimiter)


def client_address(request: web.Request) -> str:
    """The address a public request is counted under."""
    return request.remote or "unknown"
