"""Admin endpoints of SPEC §5: stores, configuration, terminals, tables and QR codes, audit,
the live lock board and reconciliation. Every one needs the process's admin token.

Choices where SPEC is silent:
- ``PUT /admin/stores/{s}`` and ``PUT .../tables/{t}`` answer 200 whether they created or renamed
  (PUT is idempotent; the body is the record either way).
- ``POST .../qr/rotate`` (extension) replaces the store's QR secret: every printed code stops
  working at ``POST /h5/sessions``; sessions already open live out their TTL.
- ``GET .../audit`` also filters by ``kind`` (the lock kind of ``data.lock``) and ``from``/``to``
  (ms, inclusive); ``next`` is None once the log is exhausted.
- ``GET .../reconciliation`` without ``to`` ends now; without ``from`` it covers the 24 hours
  before ``to``.
- ``GET .../locks`` (extension) also answers ``now``, the Redis clock the board was read at, so
  the admin console counts down to ``expires_at`` on the coordinator's clock, not the browser's.
"""

from __future__ import annotations

from aiohttp import web

from coordinator.api.routing import Call, Reply, Router
from coordinator.core import views
from coordinator.core.models import (
    AuditPage,
    AuditQuery,
    Lock,
    LockList,
    Millis,
    Reconciliation,
    ReconciliationQuery,
    Store,
    StoreConfig,
    StoreConfigChange,
    StoreIn,
    StoreList,
    Table,
    TableIn,
    TableList,
    TerminalCreated,
    TerminalIn,
    TerminalList,
)
from coordinator.realtime import liveness as presence
from coordinator.store import audit
from coordinator.store.qr import qr_png

router = Router("admin")
ADMIN = ("admin",)
#: Reconciliation's default window: the day before ``to``.
DAY_MS = 24 * 3600 * 1000


class LockBoard(LockList):
    """The admin lock board: the live locks and the Redis clock (Unix ms) they were read at."""

    now: Millis


# --- stores and configuration -------------------------------------------------------------


@router.route("PUT", "/admin/stores/{store_id}", auth=ADMIN, body=StoreIn, responses={200: Store})
async def put_store(call: Call) -> Reply:
    """Create a store, or rename it (200 either way)."""
    store = await call.services.directory.put_store(call.path["store_id"], call.body.name, call.principal.holder())
    return Reply(200, store)


@router.route("GET", "/admin/stores", auth=ADMIN, responses={200: StoreList})
async def list_stores(call: Call) -> Reply:
    """List every store."""
    return Reply(200, StoreList(stores=await call.services.directory.stores()))


@router.route("GET", "/admin/stores/{store_id}/config", auth=ADMIN, responses={200: StoreConfig})
async def get_config(call: Call) -> Reply:
    """The store's configuration (SPEC §6)."""
    return Reply(200, await call.services.directory.config(call.path["store_id"]))


@router.route("PATCH", "/admin/stores/{store_id}/config", auth=ADMIN, body=StoreConfigChange,
              responses={200: StoreConfig})
async def patch_config(call: Call) -> Reply:
    """Change any subset of the configuration; applies to locks taken afterwards."""
    config = await call.services.directory.patch_config(call.path["store_id"], call.body, call.principal.holder())
    return Reply(200, config)


# --- terminals ----------------------------------------------------------------------------


@router.route("POST", "/admin/stores/{store_id}/terminals", auth=ADMIN, body=TerminalIn,
              responses={201: TerminalCreated})
async def register_terminal(call: Call) -> Reply:
    """Register an ERP terminal; its token is shown in this response only."""
    created = await call.services.directory.register_terminal(
        call.path["store_id"], call.body.name, call.body.master, call.principal.holder()
    )
    return Reply(201, created)


@router.route("GET", "/admin/stores/{store_id}/terminals", auth=ADMIN, responses={200: TerminalList})
async def list_terminals(call: Call) -> Reply:
    """The store's terminals, with whether each has a live websocket."""
    store_id = call.path["store_id"]
    online = await presence.online(call.services.redis, store_id, await call.services.engine.now())
    return Reply(200, TerminalList(terminals=await call.services.directory.terminals(store_id, online)))


@router.route("DELETE", "/admin/stores/{store_id}/terminals/{terminal_id}", auth=ADMIN, responses={204: None})
async def revoke_terminal(call: Call) -> Reply:
    """Revoke a terminal: its token stops working, its locks are released, its sockets closed."""
    store_id, terminal_id = call.path["store_id"], call.path["terminal_id"]
    await call.services.directory.revoke_terminal(store_id, terminal_id, call.principal.holder())
    call.services.auth.cache.invalidate(store_id, terminal_id)  # this process at once, whatever the hub does
    # Closing live sockets (code 4401, in every process) belongs to the websocket hub.
    await call.services.hub.disconnect_terminal(store_id, terminal_id)
    return Reply(204)


# --- tables and QR codes ------------------------------------------------------------------


@router.route("PUT", "/admin/stores/{store_id}/tables/{table_id}", auth=ADMIN, body=TableIn,
              responses={200: Table})
async def put_table(call: Call) -> Reply:
    """Create or rename a table; the answer carries the link its QR code encodes."""
    table = await call.services.directory.put_table(
        call.path["store_id"], call.path["table_id"], call.body.name, call.principal.holder()
    )
    return Reply(200, table)


@router.route("GET", "/admin/stores/{store_id}/tables", auth=ADMIN, responses={200: TableList})
async def list_tables(call: Call) -> Reply:
    """The store's tables with their QR links."""
    return Reply(200, TableList(tables=await call.services.directory.tables(call.path["store_id"])))


@router.route("GET", "/admin/stores/{store_id}/tables/{table_id}/qr.png", auth=ADMIN,
              responses={200: "image/png"})
async def table_qr(call: Call) -> web.Response:
    """The table's QR code as a PNG image, for printing."""
    table = await call.services.directory.table(call.path["store_id"], call.path["table_id"])
    # no-cache: a rotated secret must never be served from a stale copy.
    return web.Response(body=qr_png(table.qr_url), content_type="image/png",
                        headers={"Cache-Control": "no-cache"})


@router.route("POST", "/admin/stores/{store_id}/qr/rotate", auth=ADMIN, responses={204: None})
async def rotate_qr(call: Call) -> Reply:
    """Replace the store's QR secret: every printed QR code of the store stops working."""
    await call.services.directory.rotate_qr_secret(call.path["store_id"], call.principal.holder())
    return Reply(204)


# --- audit, lock board, reconciliation ----------------------------------------------------


@router.route("GET", "/admin/stores/{store_id}/audit", auth=ADMIN, query=AuditQuery, responses={200: AuditPage})
async def read_audit(call: Call) -> Reply:
    """A page of the store's audit log, oldest first; pass ``next`` as ``after`` for the next page."""
    store_id, q = call.path["store_id"], call.query
    await call.services.directory.store(store_id)
    where = audit.AuditFilter(
        order_id=q.order_id, kind=q.kind,
        from_ms=getattr(q, "from"), to_ms=q.to,
    )
    await call.services.engine.flush_refusals(store_id)  # counted H5 refusals show up in what is read
    return Reply(200, await audit.read_page(call.services.redis, store_id, after=q.after, limit=q.limit, where=where))


@router.route("GET", "/admin/stores/{store_id}/locks", auth=ADMIN, responses={200: LockBoard})
async def lock_board(call: Call) -> Reply:
    """Every live lock of the store, holders with names and whether they are online (no tokens)."""
    store_id = call.path["store_id"]
    await call.services.directory.store(store_id)
    engine = call.services.engine
    locks = await engine.locks(store_id)
    now = await engine.now()
    online = await presence.online(call.services.redis, store_id, now)
    return Reply(200, LockBoard(locks=[Lock.model_validate(views.staff_lock(lock, online)) for lock in locks],
                                now=now))


@router.route("GET", "/admin/stores/{store_id}/reconciliation", auth=ADMIN, query=ReconciliationQuery,
              responses={200: Reconciliation})
async def reconciliation(call: Call) -> Reply:
    """Orders that need a human look (payment forced away, completion refused), each with its audit trail."""
    store_id, q = call.path["store_id"], call.query
    await call.services.directory.store(store_id)
    to_ms = q.to if q.to is not None else await call.services.engine.now()
    from_ms = getattr(q, "from")
    if from_ms is None:
        from_ms = max(to_ms - DAY_MS, 0)
    await call.services.engine.flush_refusals(store_id)
    cases = await audit.reconcile(call.services.redis, store_id, from_ms, to_ms)
    return Reply(200, Reconciliation(cases=cases))
