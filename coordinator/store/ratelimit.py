"""Rate limits (SPEC §5 ``429 RATE_LIMITED``), counted in Redis so they hold across processes.

Two limits, both per minute from the process settings:

* ``POST /h5/sessions`` (the only public endpoint) per client address — a scanner cannot mint
  sessions in bulk: ``session_rate_per_minute``;
* every request of an H5 session per session — a diner's page cannot hammer the ERP through
  checkout, items or menu: ``h5_rate_per_minute``.

ERP terminals and the admin are trusted staff and are not limited here.

The count is a sliding-window estimate kept in one Redis hash per limited client
(``lua/ratelimit.lua``, run as ``engine.scripts.ratelimit``), on the Redis clock; a refused
request is not counted and carries the seconds to wait (``Retry-After``). The address is the TCP peer (``request.remote``): behind a
reverse proxy, configure aiohttp's forwarded-header handling so that it is the client's.
"""

from __future__ import annotations

import math

from aiohttp import web

from coordinator.core.errors import RateLimited
from coordinator.store import keys
from coordinator.store.auth import Principal
from coordinator.store.scripts import Scripts

WINDOW_MS = 60_000


class RateLimiter:
    """Sliding-window request limits on one Redis (single node or cluster)."""

    def __init__(self, *, session_rate: int, h5_rate: int, window_ms: int = WINDOW_MS) -> None:
        self.session_rate = session_rate
        self.h5_rate = h5_rate
        self.window_ms = window_ms

    async def hit(self, scripts: Scripts, key: str, limit: int) -> None:
        """Count one request under ``key``; raise RateLimited(retry_after seconds) past ``limit``."""
        allowed, retry_ms = await scripts.ratelimit(keys=[key], args=[self.window_ms, limit])
        if not int(allowed):
            raise RateLimited(max(1, math.ceil(int(retry_ms) / 1000)))

    async def session_creation(self, scripts: Scripts, address: str) -> None:
        """Count one ``POST /h5/sessions`` from ``address``."""
        await self.hit(scripts, keys.rate_address(address), self.session_rate)

    async def h5_request(self, scripts: Scripts, principal: Principal) -> None:
        """Count one request of an H5 session."""
        await self.hit(scripts, keys.rate_session(principal.store_id or "", principal.session_id or ""), self.h5_rate)


RATE_LIMITER = web.AppKey("rate_limiter", RateLimiter)


def client_address(request: web.Request) -> str:
    """The address a public request is counted under."""
    return request.remote or "unknown"
