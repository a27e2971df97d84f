"""TableOps: an admin ending stuck locks, and the table operations of SPEC §11, in Redis.

Each operation is one Lua step (``lua/admin_release.lua``, ``lua/table_op.lua``) over the
order(s) and their locks, with its events in cause order and the admin or terminal as the
audit actor.
"""

from __future__ import annotations

from typing import Any

from coordinator.core.errors import BY_CODE, LockConflict
from coordinator.core.rules import Action, Kind, Role
from coordinator.store import keys
from coordinator.core.models import OrderIn
from coordinator.store.engine import LockEngine, compact, content_hash


class TableOps:
    """Admin releases and table operations of one Redis (single node or cluster)."""

    def __init__(self, engine: LockEngine) -> None:
        self.engine = engine

    async def admin_release(self, store_id: str, order_ids: list[str], kind: str, reason: str,
                            admin: dict[str, Any], fence: int | None = None) -> tuple[list[dict], list[dict]]:
        """End the orders' locks of ``kind`` ("" = all; only the one of ``fence`` if given) as the admin; returns (released, kept)."""
        if not order_ids:
            return [], []
        reply = await self.engine.run(
            "admin_release", store_id, [keys.locks(store_id, o) for o in order_ids],
            [kind, reason, "" if fence is None else fence, *order_ids], admin,
        )
        return reply.get("released") or [], reply.get("kept") or []

    async def orders_at(self, store_id: str, table_id: str) -> list[str]:
        """The open orders of a table, plus any order with a live lock on it (a stuck table)."""
        opened = await self.engine.open_orders(store_id)
        ids = {o for o, (t, _) in opened.items() if t == table_id}
        ids.update(lock["order_id"] for lock in await self.engine.locks(store_id) if lock.get("table_id") == table_id)
        return sorted(ids)

    @staticmethod
    def _raise(reply: dict[str, Any], action: Action = Action.MODIFY) -> None:
        code = reply.get("err")
        if code is None:
            return
        extra = {"order": reply.get("order"), "lock": reply.get("lock")}
        if code in ("ORDER_LOCKED", "PAYMENT_LOCKED", "PRESETTLED"):
            raise LockConflict(code, Role.ERP, action, force_allowed=reply.get("force_allowed", False), **extra)
        raise BY_CODE[code](force_allowed=reply.get("force_allowed", False), **extra)

    # --- move and merge (SPEC §11): begin, the ERP applies it, finish -------------------------

    async def begin(self, store_id: str, operation: str, order_ids: list[str], actor: dict[str, Any], *,
                    force: bool) -> dict[str, Any]:
        """Decide a move or merge and hold the orders for it (table_op.lua "begin"); raises the denial."""
        engine = self.engine
        order_keys = [k for o in order_ids for k in (keys.order(store_id, o), keys.locks(store_id, o))]
        reply = await self.engine.run(
            "table_op", store_id, [keys.config(store_id), *order_keys],
            ["begin", "1" if force else "0", engine.new_token(), engine.defaults_json, operation, *order_ids], actor,
        )
        self._raise(reply)
        return reply

    async def finish(self, store_id: str, operation: str, into: str, held: list[dict[str, Any]],
                     actor: dict[str, Any]) -> None:
        """After the ERP's orders are stored: locks follow, the operation's locks end, old tables are told."""
        extra_keys: list[str] = []
        args: list[Any] = ["finish", operation, into]
        for h in held:
            extra_keys += [keys.order(store_id, h["order_id"]), keys.locks(store_id, h["order_id"]),
                           keys.table_follow(store_id, h["table_id"])]
            args += [h["order_id"], h["token"], "1" if h["reused"] else "0", h["table_id"]]
        await self.engine.run("table_op", store_id, extra_keys, args, actor)

    async def abort(self, store_id: str, held: list[dict[str, Any]], actor: dict[str, Any]) -> None:
        """The ERP refused or did not answer: give back the locks the operation took."""
        for h in held:
            if not h["reused"]:
                await self.engine.release(store_id, h["order_id"], Kind.ORDER, h["token"], actor)

    async def reopen(self, store_id: str, order: OrderIn, actor: dict[str, Any]) -> tuple[dict, bool]:
        """Store the ERP's reopened order over the paid one, keeping the payment in its history."""
        body = order.model_dump(mode="json", exclude={"status"})
        reply = await self.engine.run(
            "table_op", store_id, [keys.order(store_id, order.order_id), keys.open_orders(store_id)],
            ["reopen", order.order_id, compact(body), content_hash(order), order.version, order.table_id,
             order.total_cents], actor,
        )
        self._raise(reply)
        return reply["order"], reply["changed"]
