"""Every Redis key name in one place.

All keys of one store share the hash tag ``{store_id}``, so every Lua script touches a single
Redis Cluster slot. The only global keys (``tl:stores``, ``tl:due``, the address rate limits
``tl:rl:addr:*`` / ``tl:rl:ws:*`` and socket caps ``tl:ws:addr:*``) never share a script with another key.
"""

from __future__ import annotations

PREFIX = "tl"

#: Set of store ids (admin listing).
STORES = f"{PREFIX}:stores"
#: Sorted set store_id -> earliest lock expiry in that store: the sweeper's wake-up list.
DUE = f"{PREFIX}:due"


def _s(store_id: str) -> str:
    return f"{PREFIX}:{{{store_id}}}"


def store(store_id: str) -> str:
    """Hash: name, created_at, qr_secret."""
    return f"{_s(store_id)}:store"


def config(store_id: str) -> str:
    """Hash: config key -> JSON value (missing keys fall back to the defaults)."""
    return f"{_s(store_id)}:config"


def terminals(store_id: str) -> str:
    """Hash: terminal_id -> JSON {name, master, token_hash, created_at}."""
    return f"{_s(store_id)}:terminals"


def tables(store_id: str) -> str:
    """Hash: table_id -> JSON {name}."""
    return f"{_s(store_id)}:tables"


def order(store_id: str, order_id: str) -> str:
    """Hash: body, json (lib.lua write_order), status, updated_at, version, hash, table_id, total, fence, paid_ref."""
    return f"{_s(store_id)}:order:{order_id}"


def locks(store_id: str, order_id: str) -> str:
    """Hash: slot (edit | pay) -> lock JSON with its token."""
    return f"{_s(store_id)}:locks:{order_id}"


def open_orders(store_id: str) -> str:
    """Hash: order_id -> "table_id|opened_at" for every open order."""
    return f"{_s(store_id)}:open"


def active(store_id: str) -> str:
    """Sorted set: order_id -> earliest expiry of its locks (the store's lock board index)."""
    return f"{_s(store_id)}:active"


def seq(store_id: str) -> str:
    """Counter: the last event seq of the store."""
    return f"{_s(store_id)}:seq"


def events(store_id: str) -> str:
    """Stream of the store's events, id 0-<seq>, for resume."""
    return f"{_s(store_id)}:events"


def audit(store_id: str) -> str:
    """Stream of the store's audit entries (events plus actor), time-ordered ids."""
    return f"{_s(store_id)}:audit"


def presence(store_id: str) -> str:
    """Sorted set: "<terminal_id>|<connection id>" -> last heartbeat (ms)."""
    return f"{_s(store_id)}:presence"


def item_request(store_id: str, request_id: str) -> str:
    """String: the result of an H5 add-items request, for idempotency."""
    return f"{_s(store_id)}:req:{request_id}"


def erp_masters(store_id: str) -> str:
    """Sorted set: "<process_id>|<terminal_id>|<conn id>" -> last heartbeat (ms) of a master's socket (rpc.py)."""
    return f"{_s(store_id)}:masters"


def rpc_channel(process_id: str) -> str:
    """Pub/sub channel of one coordinator process: RPC requests and replies routed to it (rpc.py)."""
    return f"{PREFIX}:rpc:{process_id}"


def menu(store_id: str) -> str:
    """String: the ERP's menu as JSON {fetched_at, items}, cached for H5 pages (h5/menu.py)."""
    return f"{_s(store_id)}:menu"


def payment(store_id: str, out_trade_no: str) -> str:
    """Hash: one provider payment (payments/ledger.py): order, version, fence, amount, state, refund."""
    return f"{_s(store_id)}:pay:{out_trade_no}"


def payments(store_id: str) -> str:
    """Sorted set: out_trade_no -> created_at of every provider payment (reconciliation, summary)."""
    return f"{_s(store_id)}:payments"


def payment_tx(store_id: str, provider: str, transaction_id: str) -> str:
    """String: out_trade_no of a captured provider transaction (a notification is idempotent on it)."""
    return f"{_s(store_id)}:paytx:{provider}:{transaction_id}"


def payment_refs(store_id: str) -> str:
    """Hash: payment_ref -> order_id: a payment reference pays at most one order of the store."""
    return f"{_s(store_id)}:payrefs"


def payment_tasks(store_id: str) -> str:
    """Sorted set: "<outbox|poll|refund>:<out_trade_no>" -> due ms (payments/worker.py leases them)."""
    return f"{_s(store_id)}:paytasks"


def payment_providers(store_id: str) -> str:
    """Hash: provider name -> its settings, encrypted with the process secret key (payments/vault.py)."""
    return f"{_s(store_id)}:payproviders"


def rate_address(address: str) -> str:
    """Hash: sliding-window count of POST /h5/sessions from one client address (ratelimit.py)."""
    return f"{PREFIX}:rl:addr:{address}"


def rate_session(store_id: str, session_id: str) -> str:
    """Hash: sliding-window count of one H5 session's requests (ratelimit.py)."""
    return f"{_s(store_id)}:rl:h5:{session_id}"


def rate_ws_address(address: str) -> str:
    """Hash: sliding-window count of websocket connects from one client address (ratelimit.py)."""
    return f"{PREFIX}:rl:ws:{address}"


def ws_session(store_id: str, session_id: str) -> str:
    """Sorted set: the open websockets of one H5 session, connection id -> lease end ms (admission.py)."""
    return f"{_s(store_id)}:ws:h5:{session_id}"


def ws_terminal(store_id: str, terminal_id: str) -> str:
    """Sorted set: the open websockets of one ERP terminal, connection id -> lease end ms (admission.py)."""
    return f"{_s(store_id)}:ws:erp:{terminal_id}"


def ws_address(address: str) -> str:
    """Sorted set: the open websockets from one client address, connection id -> lease end ms (admission.py)."""
    return f"{PREFIX}:ws:addr:{address}"


def h5_refusals(store_id: str) -> str:
    """Hash: table_id -> JSON window of refused H5 requests, counted instead of audited (lua/refusals.lua)."""
    return f"{_s(store_id)}:h5refused"


def common(store_id: str) -> list[str]:
    """KEYS[1..4] of every script (see lua/lib.lua)."""
    return [seq(store_id), events(store_id), audit(store_id), active(store_id)]


# --- table operations, stuck locks, service requests (SPEC §11) ------------------------------


def service_request(store_id: str, request_id: str) -> str:
    """String: JSON of one service request {id, kind, table_id, requested_at, state, taken_by, taken_at}."""
    return f"{_s(store_id)}:svc:{request_id}"


def service_requests(store_id: str) -> str:
    """Sorted set: request id -> requested_at of the store's recent service requests."""
    return f"{_s(store_id)}:svcs"


def service_cooldown(store_id: str, table_id: str, kind: str) -> str:
    """String with a TTL: a table's last request of one kind, while it cools down."""
    return f"{_s(store_id)}:svccool:{table_id}:{kind}"


def table_follow(store_id: str, table_id: str) -> str:
    """Hash: where the table's party went: to (table_id), order_id, at (ms) of the last move or merge away."""
    return f"{_s(store_id)}:follow:{table_id}"


# --- live fan-out (realtime/stream.py) ---------------------------------------------------------


def live(store_id: str) -> str:
    """Pub/sub channel of the store's live events (realtime/stream.py subscribes it per served store)."""
    return f"{_s(store_id)}:live"
