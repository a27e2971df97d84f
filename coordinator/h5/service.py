"""H5Service: every flow a diner's page starts (SPEC §5 H5 session), callable without HTTP.

One instance serves every diner of every store: each call names its ``Diner`` (store, table,
session), and reads or writes only that table (invariant 6).
"""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter, ValidationError

from coordinator.core import views
from coordinator.core.errors import NotFound, Unauthenticated
from coordinator.core.models import (
    Checkout,
    H5Config,
    H5TableView,
    Id,
    ItemsRequest,
    LockView,
    Menu,
    Order,
    Released,
    SessionCreated,
    StoreRef,
    TableRef,
)
from coordinator.h5.addons import AddOns
from coordinator.core.shares import ShareSpec
from coordinator.h5.checkout import Checkouts
from coordinator.h5.erp_link import ErpLink, RpcCaller
from coordinator.h5.menu import store_menu
from coordinator.h5.table import Diner
from coordinator.store.auth import Authenticator, parse_qr_token, verify_qr_token
from coordinator.store.directory import Directory
from coordinator.store.engine import LockEngine

_ID = TypeAdapter(Id)


class H5Service:
    """The diner's flows over the lock engine, the store directory and the ERP's RPC."""

    def __init__(self, redis: Any, engine: LockEngine, directory: Directory, auth: Authenticator,
                 rpc: RpcCaller | None) -> None:
        self.redis = redis
        self.engine = engine
        self.directory = directory
        self.auth = auth
        self.erp = ErpLink(engine, rpc)
        self._addons = AddOns(redis, engine, self.erp)
        self._checkouts = Checkouts(engine, self.erp)

    async def open_session(self, qr_token: str) -> SessionCreated:
        """Open a diner's session on the table a genuine QR code names (Unauthenticated if forged or rotated)."""
        store_id, table_id, _mac = parse_qr_token(qr_token)
        try:
            _ID.validate_python(store_id)
            _ID.validate_python(table_id)
            secret = await self.directory.qr_secret(store_id)
        except (ValidationError, NotFound):
            raise Unauthenticated() from None  # a code naming no store is as good as forged
        verify_qr_token(qr_token, secret)
        await self.directory.table(store_id, table_id)  # a genuine code of a table since removed
        # The session begins at the store's current seq: what happened before is an earlier party's.
        token, _session_id, expires_at = self.auth.new_session(
            store_id, table_id, await self.engine.now(), await self.engine.seq(store_id))
        return SessionCreated(session_token=token, store_id=store_id, table_id=table_id, expires_at=expires_at)

    async def table(self, diner: Diner) -> H5TableView:
        """Everything the diner's page shows of its table: the open order, its locks, the config."""
        engine, store_id, table_id = self.engine, diner.store_id, diner.table_id
        # seq first: a poller that resumes events from it may see a change twice, never miss one.
        seq = await engine.seq(store_id)
        store = await self.directory.store(store_id)
        table = await self.directory.table(store_id, table_id)
        config = await engine.config(store_id)
        order = await engine.table_order(store_id, table_id)
        locks: list[dict[str, Any]] = []
        if order is not None:
            _, locks = await engine.get_order(store_id, order["order_id"])
        return H5TableView(
            store=StoreRef(store_id=store.store_id, name=store.name),
            table=TableRef(table_id=table.table_id, name=table.name),
            order=Order.model_validate(order) if order is not None else None,
            locks=[LockView.model_validate(views.h5_lock(lock, diner.session_id)) for lock in locks],
            config=H5Config(strong_link_enabled=config.strong_link_enabled,
                            h5_payment_lock_seconds=config.h5_payment_lock_seconds),
            seq=seq,
        )

    async def menu(self, diner: Diner) -> Menu:
        """The store's menu from the ERP (cached a minute; the last one while the ERP is unreachable)."""
        return await store_menu(self.redis, self.engine, self.erp, diner)

    async def add_items(self, diner: Diner, request: ItemsRequest) -> Order:
        """Add dishes to the table's order through the ERP (it opens one if none); idempotent on request_id."""
        return await self._addons.add(diner, request)

    async def checkout(self, diner: Diner, *, force: bool = False, share: ShareSpec | None = None) -> Checkout:
        """Pull the table's order from the ERP and take the H5 payment lock bound to that version."""
        return await self._checkouts.checkout(diner, force=force, share=share)

    async def cancel_checkout(self, diner: Diner, token: str) -> Released:
        """Give the H5 payment lock back; ``released`` is false when the token holds nothing releasable."""
        return await self._checkouts.cancel(diner, token)
