"""ServiceDesk: diners' service requests (呼叫服务员, 加水, 请求结账) in Redis (SPEC §11).

A request is one Lua step (``lua/service.lua``): the per-table, per-kind cooldown, the record and
``service.requested`` to the store's terminals. Taking it is another: the first waiter wins
atomically, whichever coordinator process each waiter's request reaches; the others get
``ALREADY_TAKEN`` naming who took it.
"""

from __future__ import annotations

import json
import math
import secrets
from typing import Any

from coordinator.core.errors import BY_CODE, AlreadyTaken, RateLimited
from coordinator.store import keys
from coordinator.store.engine import LockEngine

#: A table may ask for the same kind of service once per this many ms.
COOLDOWN_MS = 30_000
#: Requests stay listed (inbox, admin board) this long.
KEEP_MS = 6 * 3600 * 1000

_COOLDOWN_TEXT = ("已通知服务员,请稍候再按", "A waiter has been called; please wait before asking again")


class ServiceDesk:
    """The service requests of one Redis (single node or cluster)."""

    def __init__(self, engine: LockEngine, *, cooldown_ms: int = COOLDOWN_MS, keep_ms: int = KEEP_MS) -> None:
        self.engine = engine
        self.cooldown_ms = cooldown_ms
        self.keep_ms = keep_ms

    async def request(self, store_id: str, table_id: str, kind: str, diner: dict[str, Any]) -> dict:
        """Record a diner's request and push it to the terminals; RateLimited while the kind cools down."""
        request_id = secrets.token_hex(8)
        reply = await self.engine.run(
            "service", store_id,
            [keys.service_request(store_id, request_id), keys.service_requests(store_id),
             keys.service_cooldown(store_id, table_id, kind)],
            ["request", request_id, table_id, kind, self.cooldown_ms, self.keep_ms], diner,
        )
        if reply.get("err") == "RATE_LIMITED":
            zh, en = _COOLDOWN_TEXT
            raise RateLimited(max(1, math.ceil(reply["retry_after_ms"] / 1000)), message=zh, message_en=en)
        return reply["request"]

    async def take(self, store_id: str, request_id: str, waiter: dict[str, Any]) -> dict:
        """Take the request for ``waiter``: exactly one waiter wins; the others get ALREADY_TAKEN."""
        reply = await self.engine.run(
            "service", store_id, [keys.service_request(store_id, request_id), keys.service_requests(store_id)],
            ["take", request_id], waiter,
        )
        code = reply.get("err")
        if code == "ALREADY_TAKEN":
            request = reply["request"]
            by = request.get("taken_by") or {}
            name = by.get("name") or by.get("role") or ""
            raise AlreadyTaken(
                f"该呼叫已由 {name} 接单", f"{name} has already taken this request",
                details=[{"taken_by": by, "taken_at": request.get("taken_at")}],
            )
        if code:
            raise BY_CODE[code]()
        return reply["request"]

    async def recent(self, store_id: str) -> list[dict]:
        """The store's requests of the last ``keep_ms``, newest first."""
        redis = self.engine.redis
        since = await self.engine.now() - self.keep_ms
        ids = await redis.zrevrangebyscore(keys.service_requests(store_id), "+inf", since)
        if not ids:
            return []
        pipe = redis.pipeline(transaction=False)
        for request_id in ids:
            pipe.get(keys.service_request(store_id, request_id.decode()))
        return [json.loads(raw) for raw in await pipe.execute() if raw]
