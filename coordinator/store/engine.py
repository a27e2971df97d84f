"""LockEngine: runs the Lua scripts and turns their replies into plain data or errors.

Every state change of a store goes through one script (``lua/``): the rules, the fence, the
events and the audit entry happen in one atomic step on the Redis server clock. Reads that only
*look* (the lock board, ``check``) use a pipeline plus ``TIME`` and the pure ``rules.decide``.

Actors are holder dicts as stored in locks: ``{"role": "erp", "terminal_id", "name"}``,
``{"role": "h5", "session_id"}`` or ``{"role": "system"}`` (sweeper, admin).
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
from typing import Any, Callable

from coordinator import metrics
from coordinator.core.errors import BY_CODE, LockConflict, LockLost, TablelockError
from coordinator.core.models import OrderIn, StoreConfig
from coordinator.core.rules import Action, Actor, Decision, HeldLock, Kind, Role, decide
from coordinator.core.tables import current_order
from coordinator.store import keys
from coordinator.store.redis_conn import is_cluster
from coordinator.store.scripts import Scripts

log = logging.getLogger(__name__)

SYSTEM = {"role": "system"}
#: A terminal is online while a presence entry of it is younger than this (realtime/liveness.py).
PRESENCE_STALE_MS = 30_000
_LOCK_CODES = {"ORDER_LOCKED", "PAYMENT_LOCKED", "PRESETTLED"}


def compact(value: Any) -> str:
    """JSON text as the scripts expect it: compact, non-ASCII kept."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def rules_actor(actor: dict[str, Any]) -> Actor:
    """The rules' view of a holder dict."""
    return Actor(Role(actor["role"]), actor.get("terminal_id") or actor.get("session_id", ""))


def held_lock(lock: dict[str, Any]) -> HeldLock:
    """The rules' view of a stored lock."""
    return HeldLock(
        kind=Kind(lock["kind"]),
        holder=rules_actor(lock["holder"]),
        expires_at=int(lock["expires_at"]),
        completing=bool(lock.get("completing")),
        version=lock.get("version"),
        share=bool(lock.get("share")),
    )


def content_hash(order: OrderIn) -> str:
    """Digest of what makes two pushes of one version "the same content" (status aside)."""
    # Adjustments join the digest only when present, so an order pushed before they existed keeps
    # its digest and a repeat of it stays idempotent.
    fields = {"table_id", "items", "total_cents"} | ({"adjustments"} if order.adjustments else set())
    body = order.model_dump(include=fields, mode="json")
    return hashlib.sha256(compact(body).encode()).hexdigest()


class LockEngine:
    """The lock engine of one Redis (single node or cluster)."""

    def __init__(
        self,
        redis: Any,
        *,
        defaults: StoreConfig,
        event_retention: int = 10_000,
        audit_retention: int = 200_000,
        token_source: Callable[[], str] = lambda: secrets.token_urlsafe(24),
        wait_replicas: int = 0,
        wait_timeout_ms: int = 100,
        refusal_window_ms: int = 60_000,
        refusals_per_table: int = 5,
    ) -> None:
        self.redis = redis
        self.defaults = defaults
        #: The store configuration defaults as the scripts take them (ARGV), one JSON text.
        self.defaults_json = defaults.model_dump_json()
        self._event_retention = str(event_retention)
        self._audit_retention = str(audit_retention)
        #: Draws a new lock token (injected in tests).
        self.new_token = token_source
        #: Every Lua script, registered once here; other layers call their scripts through it.
        self.scripts = Scripts.register(redis)
        self._wait = (wait_replicas, wait_timeout_ms)
        #: The audit bound on refused H5 requests (lib.lua bounded_refusal): window, written per table.
        self._refusals = (refusal_window_ms, refusals_per_table)

    # --- script plumbing ------------------------------------------------------------------

    async def run(
        self, name: str, store_id: str, extra_keys: list[str], args: list[Any], actor: dict[str, Any]
    ) -> dict[str, Any]:
        """Run lock script ``name`` with the common KEYS/ARGV of lib.lua; keep the sweeper's due index.

        The global index ``tl:due`` cannot be in a store's script (another Cluster slot), so it is
        written here, and only when the script says the store's earliest expiry moved earlier
        (``wake``): otherwise its entry is already early enough, and the request costs one round trip.
        """
        raw = await self.scripts.by_name(name)(
            # The presence zset last: events get their ERP holders' ``online`` in Lua (lib.lua).
            keys=[*keys.common(store_id), *extra_keys, keys.presence(store_id)],
            args=[
                store_id, keys.live(store_id), self._event_retention, self._audit_retention,
                compact(actor), *args,
            ],
        )
        reply = json.loads(raw)
        wake = reply.get("wake")
        if wake is not None:
            # LT: only ever move the store's wake-up time earlier (see sweeper.py).
            await self.redis.zadd(keys.DUE, {store_id: wake}, lt=True)
        return reply

    async def _replicated(self, store_id: str, order_id: str, reply: dict[str, Any]) -> None:
        """After a grant or a completion, wait (bounded) for the replicas to acknowledge it (WAIT).

        Off unless ``wait_replicas`` > 0. A timeout does not undo or refuse what is done: the
        write is on the primary and the caller's retry would get the same lock back anyway;
        refusing would only leave a held lock its holder does not know about. WAIT narrows the
        window in which a failover can lose the write; fences never depend on it (lib.lua).
        """
        replicas, timeout_ms = self._wait
        if replicas <= 0 or reply.get("err"):
            return
        options: dict[str, Any] = {}
        if is_cluster(self.redis):  # WAIT must reach the primary that holds the order's slot
            options["target_nodes"] = self.redis.get_node_from_key(keys.order(store_id, order_id))
        acked = await self.redis.execute_command("WAIT", replicas, timeout_ms, **options)
        if int(acked) < replicas:
            metrics.REPLICA_WAIT_SHORT.inc()
            log.warning("WAIT: %s of %s replicas acknowledged within %sms", acked, replicas, timeout_ms)

    #: For the other store-layer books of scripts (store/share_book.py): the same plumbing.

    @staticmethod
    def _observe(kind: str, op: str, reply: dict[str, Any]) -> None:
        """Count one lock operation for /metrics: its result, a denial's code, the locks it broke."""
        code = reply.get("err")
        result = code or ("ok" if reply.get("released", True) else "not_held")
        metrics.LOCK_OPS.labels(kind, op, result).inc()
        if code and op == "acquire":
            metrics.CONFLICTS.labels(code).inc()
        for broken in reply.get("forced") or ():
            metrics.FORCED.labels(broken).inc()

    async def _raise(
        self, store_id: str, reply: dict[str, Any], actor: dict[str, Any], action: Action | None,
        kind: Kind | None = None,
    ) -> None:
        code = reply.get("err")
        if code is None:
            return
        # The lock as stored (no token: the scripts strip it). It is put in the form its viewer
        # may see once, on the way out (api/routing.py): invariant 6 is the API edge's job.
        extra = {"order": reply.get("order"), "lock": reply.get("lock")}
        if code in _LOCK_CODES:
            role = Role(actor["role"]) if actor.get("role") in ("erp", "h5") else Role.ERP
            raise LockConflict(code, role, action, force_allowed=reply.get("force_allowed", False), **extra)
        if code == "LOCK_LOST" and kind is not None:
            raise LockLost(kind=kind.value, **extra)  # the text names the lock that was lost
        cls: type[TablelockError] = BY_CODE[code]
        raise cls(**extra)

    raise_reply = _raise

    # --- orders ---------------------------------------------------------------------------

    async def put_order(self, store_id: str, order: OrderIn, actor: dict[str, Any], *,
                        erp_answer: bool = False, force: bool = False) -> tuple[dict, bool]:
        """Store the ERP's order; returns (order, changed).

        ``erp_answer``: the order is the ERP's own answer to an RPC, which may close the version the
        coordinator holds open (a "paid" a failover lost: put_order.lua). ``force``: past a paid
        share (SPEC §10), opening a refund task.
        """
        # The body goes without status: the script composes the stored JSON from the body and the
        # fields it changes itself (status, updated_at), so it never edits JSON text.
        # An order without adjustments is stored exactly as before they existed (the wire stays the same).
        body = order.model_dump(mode="json", exclude={"status"} | (set() if order.adjustments else {"adjustments"}))
        reply = await self.run(
            "put_order", store_id,
            [keys.order(store_id, order.order_id), keys.locks(store_id, order.order_id), keys.open_orders(store_id)],
            [order.order_id, compact(body), content_hash(order), order.version, order.status,
             order.table_id, order.total_cents, "erp" if erp_answer else "", "1" if force else "0"],
            actor,
        )
        await self._raise(store_id, reply, actor, None)
        return reply["order"], reply["changed"]

    async def get_order(self, store_id: str, order_id: str) -> tuple[dict | None, list[dict]]:
        """The order and its live locks (tokens included: callers strip them)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hget(keys.order(store_id, order_id), "json")
        pipe.hgetall(keys.locks(store_id, order_id))
        raw_order, raw_locks = await pipe.execute()
        now = await self.now()
        locks = [json.loads(v) for v in raw_locks.values()]
        return (json.loads(raw_order) if raw_order else None), [l for l in locks if l["expires_at"] > now]

    async def open_orders(self, store_id: str) -> dict[str, tuple[str, int]]:
        """order_id -> (table_id, opened_at) for every open order of the store."""
        raw = await self.redis.hgetall(keys.open_orders(store_id))
        out = {}
        for order_id, value in raw.items():
            table_id, _, opened_at = value.decode().rpartition("|")
            out[order_id.decode()] = (table_id, int(opened_at))
        return out

    async def table_order(self, store_id: str, table_id: str) -> dict | None:
        """The table's open order (the most recently opened one), or None."""
        order_id = current_order(await self.open_orders(store_id), table_id)
        if order_id is None:
            return None
        order, _ = await self.get_order(store_id, order_id)
        return order

    # --- locks ----------------------------------------------------------------------------

    @staticmethod
    def _seen(store_id: str, credential: str | None, online: bool) -> tuple[list[str], list[Any]]:
        """The optional KEYS/ARGV of acquire and renew: the terminal's check, the holders' presence."""
        return [keys.terminals(store_id)], [credential or "", "1" if online else ""]

    async def acquire(
        self, store_id: str, order_id: str, actor: dict[str, Any], kind: Kind, *,
        force: bool = False, expected_version: int | None = None, credential: str | None = None,
        online: bool = False,
    ) -> tuple[dict, bool]:
        """Take a lock; returns (lock with token, enforced) or raises the denial.

        ``credential``: the ERP terminal's token hash, checked again in the script (revocation wins
        over any cache). ``online``: the locks of the reply (or the denial) carry ``holder.online``.
        """
        action = {Kind.ORDER: Action.MODIFY, Kind.PRESETTLE: Action.PRESETTLE, Kind.PAYMENT: Action.PAY}[kind]
        more_keys, more_args = self._seen(store_id, credential, online)
        reply = await self.run(
            "acquire", store_id,
            [keys.order(store_id, order_id), keys.locks(store_id, order_id), keys.config(store_id), *more_keys],
            [order_id, action.value, "1" if force else "0",
             "" if expected_version is None else expected_version, self.new_token(), self.defaults_json,
             *more_args],
            actor,
        )
        self._observe(kind.value, "acquire", reply)
        await self._raise(store_id, reply, actor, action)
        await self._replicated(store_id, order_id, reply)
        return reply["lock"], reply["enforced"]

    async def renew(self, store_id: str, order_id: str, kind: Kind, token: str, actor: dict[str, Any], *,
                    credential: str | None = None, online: bool = False) -> dict:
        """Extend an ERP lock; raises LockLost when the token holds nothing (``credential``, ``online``: acquire)."""
        more_keys, more_args = self._seen(store_id, credential, online)
        reply = await self.run(
            "renew", store_id, [keys.locks(store_id, order_id), keys.config(store_id), *more_keys],
            [order_id, kind.value, token, self.defaults_json, *more_args], actor,
        )
        self._observe(kind.value, "renew", reply)
        await self._raise(store_id, reply, actor, None, kind)
        return reply["lock"]

    async def release(self, store_id: str, order_id: str, kind: Kind, token: str, actor: dict[str, Any], *,
                      credential: str | None = None) -> bool:
        """Give a lock back; False when the token holds nothing releasable (``credential``: acquire)."""
        reply = await self.run(
            "release", store_id, [keys.locks(store_id, order_id), keys.terminals(store_id)],
            [order_id, kind.value, token, credential or ""], actor,
        )
        self._observe(kind.value, "release", reply)
        await self._raise(store_id, reply, actor, None)
        return reply["released"]

    async def expire(self, store_id: str, order_id: str) -> int:
        """End the order's locks past expiry; returns the order's next expiry or -1."""
        reply = await self.run("expire", store_id, [keys.locks(store_id, order_id)], [order_id], SYSTEM)
        return reply["due"]

    async def _each_order_of_terminal(self, store_id: str, terminal_id: str, op: str, grace_ms: int) -> int:
        changed = 0
        for order_id in await self.redis.zrange(keys.active(store_id), 0, -1):
            reply = await self.run(
                "holder", store_id, [keys.locks(store_id, order_id.decode())],
                [order_id.decode(), terminal_id, op, grace_ms], SYSTEM,
            )
            changed += reply["changed"]
        return changed

    async def revoke_terminal(self, store_id: str, terminal_id: str) -> int:
        """Release every lock the terminal holds (reason revoked)."""
        return await self._each_order_of_terminal(store_id, terminal_id, "revoke", 0)

    async def terminal_offline(self, store_id: str, terminal_id: str, grace_ms: int) -> int:
        """Cap the expiry of the terminal's locks at now + grace (its last socket closed)."""
        return await self._each_order_of_terminal(store_id, terminal_id, "disconnect", grace_ms)

    async def locks(self, store_id: str) -> list[dict]:
        """Every live lock of the store (tokens included: callers strip them)."""
        order_ids = await self.redis.zrange(keys.active(store_id), 0, -1)
        if not order_ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for order_id in order_ids:
            pipe.hgetall(keys.locks(store_id, order_id.decode()))
        results = await pipe.execute()
        now = await self.now()
        out = [json.loads(v) for raw in results for v in raw.values()]
        return sorted((l for l in out if l["expires_at"] > now), key=lambda l: (l["order_id"], l["kind"]))

    async def check(self, store_id: str, order_id: str, actor: dict[str, Any], action: Action, *,
                    credential: str | None = None) -> Decision:
        """Ask the pure rules about ``action`` on the order as it is now (nothing changes; one script)."""
        seen = json.loads(await self.scripts.peek(
            keys=[keys.order(store_id, order_id), keys.locks(store_id, order_id), keys.config(store_id),
                  keys.terminals(store_id)],
            args=[actor.get("terminal_id") or "", credential or ""],
        ))
        if not seen["auth"]:
            raise BY_CODE["UNAUTHENTICATED"]()
        order, now = seen["order"], seen["now"]
        if order is None:
            raise BY_CODE["NOT_FOUND"]()
        if order["status"] != "open":
            raise BY_CODE["ORDER_CLOSED"](order=order)
        enforced = seen["config"].get("strong_link_enabled", self.defaults.strong_link_enabled)
        return decide([held_lock(l) for l in seen["locks"] if l["expires_at"] > now], rules_actor(actor), action,
                      now=now, enforced=bool(enforced))

    # --- payments -------------------------------------------------------------------------

    async def complete(
        self, store_id: str, order_id: str, actor: dict[str, Any], *, token: str, amount_cents: int,
        version: int, payment_ref: str,
    ) -> dict:
        """An ERP terminal's own payment: check it against the payment lock and mark the order paid."""
        reply = await self.run(
            "complete", store_id,
            [keys.order(store_id, order_id), keys.locks(store_id, order_id), keys.open_orders(store_id),
             keys.config(store_id), keys.payment_refs(store_id)],
            [order_id, token, amount_cents, version, payment_ref, self.defaults_json],
            actor,
        )
        self._observe(Kind.PAYMENT.value, "complete", reply)
        await self._raise(store_id, reply, actor, Action.PAY)
        await self._replicated(store_id, order_id, reply)
        return reply

    # --- configuration, events, time -----------------------------------------------------

    async def config(self, store_id: str) -> StoreConfig:
        """The store's configuration: stored values over the defaults."""
        stored = await self.redis.hgetall(keys.config(store_id))
        values = self.defaults.model_dump()
        values.update({k.decode(): json.loads(v) for k, v in stored.items()})
        return StoreConfig.model_validate(values)

    async def emit(
        self, store_id: str, name: str, data: dict[str, Any], actor: dict[str, Any], *,
        table_id: str = "", order_id: str = "", audit_only: bool = False,
    ) -> int:
        """Append an event (or an audit-only entry) that no lock script produced; returns its seq."""
        reply = await self.run(
            "emit", store_id, [], [name, table_id, order_id, compact(data), "audit" if audit_only else ""], actor
        )
        return reply["seq"]

    async def emit_refusal(
        self, store_id: str, name: str, data: dict[str, Any], actor: dict[str, Any], *,
        table_id: str, order_id: str, code: str,
    ) -> bool:
        """Record an H5 session's refused request (its event ``name``) under the audit bound; False: only counted."""
        reply = await self.run(
            "emit", store_id, [keys.h5_refusals(store_id)],
            [name, table_id, order_id, compact(data), "refusal", *self._refusals, code], actor,
        )
        return bool(reply["written"])

    async def flush_refusals(self, store_id: str) -> None:
        """Write the store's counted H5 refusals to the audit log now (before the admin reads it)."""
        await self.run("flush_refusals", store_id, [keys.h5_refusals(store_id)], [self._refusals[0]], SYSTEM)

    async def seq(self, store_id: str) -> int:
        """The store's last event seq."""
        return int(await self.redis.get(keys.seq(store_id)) or 0)

    async def now(self) -> int:
        """The Redis server clock in Unix ms."""
        seconds, micros = await self.redis.time()
        return seconds * 1000 + micros // 1000
