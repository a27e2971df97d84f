"""H5 (diner) endpoints of SPEC §5 that need no ERP RPC: opening a session and the table view.

A session is bound to one table (invariant 6): every read here is of ``principal.table_id``,
and locks are shown in the H5 viewer form (no tokens, no terminal or session ids).
The RPC-backed endpoints (menu, items, checkout, payments) are declared on this same router
by the realtime side.
"""

from __future__ import annotations

from pydantic import TypeAdapter, ValidationError

from coordinator.api.routing import Call, Reply, Router
from coordinator.core import views
from coordinator.core.errors import NotFound, Unauthenticated
from coordinator.core.models import (
    H5Config,
    H5TableView,
    Id,
    LockView,
    Order,
    SessionCreated,
    SessionRequest,
    StoreRef,
    TableRef,
)
from coordinator.store.auth import parse_qr_token, verify_qr_token

router = Router("h5")

_ID = TypeAdapter(Id)


@router.route("POST", "/h5/sessions", auth=("public",), body=SessionRequest,
              responses={201: SessionCreated}, errors=(401,))
async def create_session(call: Call) -> Reply:
    """Open a diner's session on the table a genuine QR code names (401 if forged or rotated)."""
    services = call.services
    store_id, table_id, _mac = parse_qr_token(call.body.qr_token)
    try:
        _ID.validate_python(store_id)
        _ID.validate_python(table_id)
        secret = await services.directory.qr_secret(store_id)
    except (ValidationError, NotFound):
        raise Unauthenticated() from None  # a code naming no store is as good as forged
    verify_qr_token(call.body.qr_token, secret)
    await services.directory.table(store_id, table_id)  # a genuine code of a table since removed
    token, _session_id, expires_at = services.auth.new_session(store_id, table_id, await services.engine.now())
    return Reply(201, SessionCreated(session_token=token, store_id=store_id, table_id=table_id,
                                     expires_at=expires_at))


@router.route("GET", "/h5/table", auth=("h5",), responses={200: H5TableView})
async def get_table(call: Call) -> Reply:
    """Everything the diner's page shows of its table: the open order, its locks, the config."""
    engine, directory, me = call.services.engine, call.services.directory, call.principal
    store_id, table_id = me.store_id, me.table_id
    # seq first: a poller that resumes events from it may see a change twice, never miss one.
    seq = await engine.seq(store_id)
    store = await directory.store(store_id)
    table = await directory.table(store_id, table_id)
    config = await engine.config(store_id)
    order = await engine.table_order(store_id, table_id)
    locks: list[dict] = []
    if order is not None:
        _, locks = await engine.get_order(store_id, order["order_id"])
    return Reply(200, H5TableView(
        store=StoreRef(store_id=store.store_id, name=store.name),
        table=TableRef(table_id=table.table_id, name=table.name),
        order=Order.model_validate(order) if order is not None else None,
        locks=[LockView.model_validate(views.h5_lock(lock, me.session_id)) for lock in locks],
        config=H5Config(strong_link_enabled=config.strong_link_enabled,
                        h5_payment_lock_seconds=config.h5_payment_lock_seconds),
        seq=seq,
    ))
