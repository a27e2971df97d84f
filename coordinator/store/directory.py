"""Stores, their configuration, terminals and tables: the records the admin manages.

Changes that clients must hear about go out as events (``config.updated``); the others are
audit-only entries (``terminal.registered``, ``terminal.revoked``, ``table.updated``,
``qr.rotated``), all through ``LockEngine.emit`` so they share the store's audit log.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from coordinator.core.errors import NotFound
from coordinator.core.models import Store, StoreConfig, StoreConfigPatch, Table, Terminal, TerminalCreated
from coordinator.store import keys
from coordinator.store.auth import new_terminal_token, qr_token
from coordinator.store.engine import LockEngine, compact


class Directory:
    """Reads and writes the admin's records in Redis."""

    def __init__(self, engine: LockEngine, public_url: str) -> None:
        self.engine = engine
        self.redis = engine.redis
        self.public_url = public_url.rstrip("/")

    # --- stores ---------------------------------------------------------------------------

    async def put_store(self, store_id: str, name: str, actor: dict[str, Any]) -> Store:
        """Create the store or rename it; a new store gets its QR secret."""
        now = await self.engine.now()
        key = keys.store(store_id)
        await self.redis.hsetnx(key, "created_at", now)
        await self.redis.hsetnx(key, "qr_secret", secrets.token_urlsafe(32))
        await self.redis.hset(key, "name", name)
        await self.redis.sadd(keys.STORES, store_id)
        await self.engine.emit(store_id, "store.updated", {"name": name}, actor, audit_only=True)
        return await self.store(store_id)

    async def store(self, store_id: str) -> Store:
        """The store; raises NotFound."""
        raw = await self.redis.hgetall(keys.store(store_id))
        if not raw:
            raise NotFound()
        return Store(store_id=store_id, name=raw[b"name"].decode(), created_at=int(raw[b"created_at"]))

    async def stores(self) -> list[Store]:
        """Every store, by id."""
        ids = sorted(m.decode() for m in await self.redis.smembers(keys.STORES))
        return [await self.store(store_id) for store_id in ids]

    # --- configuration --------------------------------------------------------------------

    async def config(self, store_id: str) -> StoreConfig:
        """The store's configuration; raises NotFound for an unknown store."""
        await self.store(store_id)
        return await self.engine.config(store_id)

    async def patch_config(self, store_id: str, patch: StoreConfigPatch, actor: dict[str, Any]) -> StoreConfig:
        """Apply a partial change; it applies to locks taken from now on (config.updated)."""
        await self.store(store_id)
        changes = patch.model_dump(exclude_none=True)
        if changes:
            await self.redis.hset(keys.config(store_id), mapping={k: json.dumps(v) for k, v in changes.items()})
        config = await self.engine.config(store_id)
        if changes:
            await self.engine.emit(
                store_id, "config.updated", {"config": config.model_dump(), "changed": sorted(changes)}, actor
            )
        return config

    # --- terminals ------------------------------------------------------------------------

    async def register_terminal(self, store_id: str, name: str, master: bool, actor: dict[str, Any]) -> TerminalCreated:
        """Register a terminal; its token is returned here and never again."""
        await self.store(store_id)
        terminal_id = "T" + secrets.token_hex(4)
        token, token_hash = new_terminal_token(store_id, terminal_id)
        # n: registration order, which created_at alone cannot give within one millisecond.
        n = await self.redis.hincrby(keys.store(store_id), "terminal_seq", 1)
        record = {"name": name, "master": master, "token_hash": token_hash, "created_at": await self.engine.now(), "n": n}
        await self.redis.hset(keys.terminals(store_id), terminal_id, compact(record))
        await self.engine.emit(
            store_id, "terminal.registered", {"terminal_id": terminal_id, "name": name, "master": master},
            actor, audit_only=True,
        )
        return TerminalCreated(terminal_id=terminal_id, name=name, master=master, token=token)

    async def terminals(self, store_id: str, online: set[str] = frozenset()) -> list[Terminal]:
        """The store's terminals; ``online`` names those with a live socket."""
        await self.store(store_id)
        raw = await self.redis.hgetall(keys.terminals(store_id))
        out = []
        for terminal_id, value in raw.items():
            record, tid = json.loads(value), terminal_id.decode()
            order = (record["created_at"], record.get("n", 0))
            out.append((order, Terminal(terminal_id=tid, name=record["name"], master=record["master"],
                                        online=tid in online, created_at=record["created_at"])))
        return [terminal for _, terminal in sorted(out, key=lambda pair: pair[0])]

    async def revoke_terminal(self, store_id: str, terminal_id: str, actor: dict[str, Any]) -> None:
        """Forget the terminal's token and release its locks (reason revoked); raises NotFound."""
        await self.store(store_id)
        if not await self.redis.hdel(keys.terminals(store_id), terminal_id):
            raise NotFound()
        await self.engine.revoke_terminal(store_id, terminal_id)
        await self.engine.emit(store_id, "terminal.revoked", {"terminal_id": terminal_id}, actor, audit_only=True)

    # --- tables and QR codes --------------------------------------------------------------

    async def put_table(self, store_id: str, table_id: str, name: str, actor: dict[str, Any]) -> Table:
        """Create or rename a table."""
        await self.store(store_id)
        await self.redis.hset(keys.tables(store_id), table_id, compact({"name": name}))
        await self.engine.emit(store_id, "table.updated", {"table_id": table_id, "name": name}, actor,
                               table_id=table_id, audit_only=True)
        return await self.table(store_id, table_id)

    async def table(self, store_id: str, table_id: str) -> Table:
        """The table with its QR link; raises NotFound."""
        raw = await self.redis.hget(keys.tables(store_id), table_id)
        if raw is None:
            raise NotFound()
        return Table(table_id=table_id, name=json.loads(raw)["name"], qr_url=await self.qr_url(store_id, table_id))

    async def tables(self, store_id: str) -> list[Table]:
        """The store's tables, by id."""
        await self.store(store_id)
        raw = await self.redis.hgetall(keys.tables(store_id))
        secret = await self.qr_secret(store_id)
        return [
            Table(table_id=t.decode(), name=json.loads(v)["name"],
                  qr_url=self._qr_url(secret, store_id, t.decode()))
            for t, v in sorted(raw.items())
        ]

    async def qr_secret(self, store_id: str) -> str:
        """The store's current QR signing secret; raises NotFound."""
        secret = await self.redis.hget(keys.store(store_id), "qr_secret")
        if secret is None:
            raise NotFound()
        return secret.decode()

    async def rotate_qr_secret(self, store_id: str, actor: dict[str, Any]) -> None:
        """Replace the QR secret: every printed code stops working."""
        await self.store(store_id)
        await self.redis.hset(keys.store(store_id), "qr_secret", secrets.token_urlsafe(32))
        await self.engine.emit(store_id, "qr.rotated", {}, actor, audit_only=True)

    async def qr_url(self, store_id: str, table_id: str) -> str:
        """The H5 link a table's QR code encodes."""
        return self._qr_url(await self.qr_secret(store_id), store_id, table_id)

    def _qr_url(self, secret: str, store_id: str, table_id: str) -> str:
        return f"{self.public_url}/h5/?qr={qr_token(secret, store_id, table_id)}"
