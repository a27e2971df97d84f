"""The stand-in ERP's own order database: one sqlite file per store (stdlib only).

The ERP is the system of record. Its orders carry a ``version`` that every content change
bumps (adding or removing a line, cancelling); the coordinator only ever hears of orders
through the versions the terminals push. Paying does not bump the version: the payment is
recorded against the version that was paid, the one the coordinator binds the lock to.

Fencing (SPEC §2): the database remembers, per order, the highest ``fence`` it has seen —
from writes that carry one and from the lock grants the terminals observe on their
websockets — and refuses any write carrying a lower one (``FenceRejected``). Timeline it
protects against:

    t0  waiter A takes the order lock            fence 7
    t1  cashier B forces it away, takes payment  fence 8 (observed here)
    t2  A's editor, still open, removes a dish   carries fence 7 → refused

Every public method is one transaction (``BEGIN IMMEDIATE``), so several terminals or
processes may share the file.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import AcceptRefused, AmountMismatch, FenceRejected, NotFound, OrderClosed, VersionMismatch

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tables (
    table_id TEXT PRIMARY KEY,
    name     TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS menu (
    sku              TEXT PRIMARY KEY,
    name             TEXT NOT NULL,
    unit_price_cents INTEGER NOT NULL CHECK (unit_price_cents >= 0),
    position         INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS orders (
    order_id      TEXT PRIMARY KEY,
    table_id      TEXT NOT NULL,
    version       INTEGER NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('open', 'paid', 'cancelled')),
    fence         INTEGER NOT NULL DEFAULT 0,   -- highest fence seen for this order
    next_line     INTEGER NOT NULL DEFAULT 1,
    opened_at     INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    payment_ref   TEXT,
    paid_cents    INTEGER,
    paid_at       INTEGER
);
CREATE INDEX IF NOT EXISTS orders_by_table ON orders (table_id, status, opened_at);
CREATE TABLE IF NOT EXISTS lines (
    order_id         TEXT NOT NULL REFERENCES orders (order_id),
    line_id          TEXT NOT NULL,
    position         INTEGER NOT NULL,
    sku              TEXT NOT NULL,
    name             TEXT NOT NULL,
    qty              INTEGER NOT NULL CHECK (qty BETWEEN 1 AND 999),
    unit_price_cents INTEGER NOT NULL,
    source           TEXT NOT NULL CHECK (source IN ('erp', 'h5')),
    PRIMARY KEY (order_id, line_id)
);
-- Payments of orders reopened afterwards (反结账): the books keep them (SPEC §11).
CREATE TABLE IF NOT EXISTS reopened_payments (
    order_id    TEXT NOT NULL,
    version     INTEGER NOT NULL,
    payment_ref TEXT,
    paid_cents  INTEGER,
    paid_at     INTEGER,
    reopened_at INTEGER NOT NULL
);
-- H5 add-ons already accepted, by the coordinator's request_id (order.add_items is idempotent).
CREATE TABLE IF NOT EXISTS accepted_requests (
    request_id TEXT PRIMARY KEY,
    order_id   TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""


def wall_ms() -> int:
    """Unix time in ms (the ERP's own clock: only for opened/updated stamps, never for locks)."""
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class AcceptCheck:
    """What the coordinator said about ``accept_items`` on an order (``POST .../check``)."""

    allowed: bool
    code: str | None = None


ALLOWED = AcceptCheck(True)


class ErpDatabase:
    """One store's ERP database."""

    def __init__(self, path: str | Path, *, clock: Callable[[], int] = wall_ms, order_prefix: str = "o") -> None:
        self.path = str(path)
        self._clock = clock
        self._prefix = order_prefix
        # Autocommit mode: transactions are opened explicitly, one per public method.
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10)
        self._conn.row_factory = sqlite3.Row
        if self.path != ":memory:":
            self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.executescript(_SCHEMA)

    def close(self) -> None:
        """Close the file."""
        self._conn.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    # --- tables and menu ------------------------------------------------------------------

    def put_table(self, table_id: str, name: str) -> None:
        """Create or rename a table."""
        with self._tx() as db:
            db.execute("INSERT INTO tables VALUES (?, ?) ON CONFLICT (table_id) DO UPDATE SET name = excluded.name",
                       (table_id, name))

    def tables(self) -> list[dict[str, str]]:
        """Every table, by id."""
        return [dict(r) for r in self._conn.execute("SELECT table_id, name FROM tables ORDER BY table_id")]

    def put_dish(self, sku: str, name: str, unit_price_cents: int) -> None:
        """Add a dish to the menu or change its name or price (orders keep the price they had)."""
        with self._tx() as db:
            position = db.execute("SELECT COALESCE(MAX(position), 0) + 1 FROM menu").fetchone()[0]
            db.execute(
                "INSERT INTO menu VALUES (?, ?, ?, ?) ON CONFLICT (sku) DO UPDATE SET"
                " name = excluded.name, unit_price_cents = excluded.unit_price_cents",
                (sku, name, unit_price_cents, position),
            )

    def menu(self) -> list[dict[str, Any]]:
        """The menu in the order dishes were added: ``[{sku, name, unit_price_cents}]``."""
        rows = self._conn.execute("SELECT sku, name, unit_price_cents FROM menu ORDER BY position")
        return [dict(r) for r in rows]

    # --- reading orders -------------------------------------------------------------------

    def order(self, order_id: str) -> dict[str, Any]:
        """The order in the SPEC wire shape (what ``PUT /stores/{s}/orders/{o}`` takes); raises NotFound."""
        order = self.find_order(order_id)
        if order is None:
            raise NotFound(f"order {order_id}")
        return order

    def find_order(self, order_id: str) -> dict[str, Any] | None:
        """The order in the SPEC wire shape, or None."""
        return self._wire(self._conn, order_id)

    def open_orders(self) -> list[dict[str, Any]]:
        """Every open order, oldest first."""
        ids = self._conn.execute("SELECT order_id FROM orders WHERE status = 'open' ORDER BY opened_at, order_id")
        return [self.order(r[0]) for r in ids.fetchall()]

    def table_order(self, table_id: str) -> dict[str, Any] | None:
        """The table's open order (the most recently opened), or None."""
        row = self._conn.execute(
            "SELECT order_id FROM orders WHERE table_id = ? AND status = 'open'"
            " ORDER BY opened_at DESC, order_id DESC LIMIT 1", (table_id,),
        ).fetchone()
        return self.order(row[0]) if row else None

    def payment(self, order_id: str) -> dict[str, Any] | None:
        """``{payment_ref, amount_cents, paid_at}`` of a paid order, else None."""
        row = self._conn.execute(
            "SELECT payment_ref, paid_cents, paid_at FROM orders WHERE order_id = ? AND status = 'paid'", (order_id,)
        ).fetchone()
        return None if row is None else {"payment_ref": row[0], "amount_cents": row[1], "paid_at": row[2]}

    def highest_fence(self, order_id: str) -> int:
        """The highest fence seen for the order (0 when none)."""
        row = self._conn.execute("SELECT fence FROM orders WHERE order_id = ?", (order_id,)).fetchone()
        return 0 if row is None else int(row[0])

    # --- fences ---------------------------------------------------------------------------

    def observe_fence(self, order_id: str, fence: int) -> int:
        """Remember a fence granted by the coordinator (from an event); returns the highest seen."""
        with self._tx() as db:
            db.execute("UPDATE orders SET fence = MAX(fence, ?) WHERE order_id = ?", (fence, order_id))
            row = db.execute("SELECT fence FROM orders WHERE order_id = ?", (order_id,)).fetchone()
        return 0 if row is None else int(row[0])

    def check_fence(self, order_id: str, fence: int | None) -> None:
        """Raise FenceRejected if ``fence`` is lower than the highest seen (None: unfenced, allowed)."""
        self._fence(self._conn, order_id, fence, record=False)

    @staticmethod
    def _fence(db: sqlite3.Connection, order_id: str, fence: int | None, *, record: bool = True) -> None:
        if fence is None:
            return
        row = db.execute("SELECT fence FROM orders WHERE order_id = ?", (order_id,)).fetchone()
        if row is None:
            raise NotFound(f"order {order_id}")
        if fence < row[0]:
            raise FenceRejected(order_id, fence, int(row[0]))
        if record and fence > row[0]:
            db.execute("UPDATE orders SET fence = ? WHERE order_id = ?", (fence, order_id))

    # --- changing orders ------------------------------------------------------------------

    def open_order(self, table_id: str, items: Iterable[Mapping[str, Any]] = (), *, source: str = "erp",
                   order_id: str | None = None) -> dict[str, Any]:
        """Open a new order on the table (version 1) with ``items`` = ``[{sku, qty}]``."""
        with self._tx() as db:
            order_id = self._open(db, table_id, order_id)
            self._add_lines(db, order_id, items, source)
            return self._wire(db, order_id)

    def add_items(self, order_id: str, items: Iterable[Mapping[str, Any]], *, source: str = "erp",
                  fence: int | None = None) -> dict[str, Any]:
        """Append dishes ``[{sku, qty}]`` (version + 1); ``fence`` is the writer's lock fence, if any."""
        with self._tx() as db:
            self._writable(db, order_id, fence)
            self._add_lines(db, order_id, items, source)
            self._bump(db, order_id)
            return self._wire(db, order_id)

    def remove_line(self, order_id: str, line_id: str, *, fence: int | None = None) -> dict[str, Any]:
        """Remove one line (version + 1); raises NotFound for an unknown line."""
        with self._tx() as db:
            self._writable(db, order_id, fence)
            if db.execute("DELETE FROM lines WHERE order_id = ? AND line_id = ?", (order_id, line_id)).rowcount == 0:
                raise NotFound(f"line {line_id} of order {order_id}")
            self._bump(db, order_id)
            return self._wire(db, order_id)

    def cancel(self, order_id: str, *, fence: int | None = None) -> dict[str, Any]:
        """Cancel the order (version + 1): the push closes it at the coordinator too."""
        with self._tx() as db:
            self._writable(db, order_id, fence)
            db.execute("UPDATE orders SET status = 'cancelled' WHERE order_id = ?", (order_id,))
            self._bump(db, order_id)
            return self._wire(db, order_id)

    def move_order(self, order_id: str, to_table_id: str, *, fence: int | None = None) -> dict[str, Any]:
        """Move the order to another table (换桌, version + 1); its lines stay as they are."""
        with self._tx() as db:
            self._writable(db, order_id, fence)
            if db.execute("SELECT 1 FROM tables WHERE table_id = ?", (to_table_id,)).fetchone() is None:
                db.execute("INSERT INTO tables VALUES (?, ?)", (to_table_id, to_table_id))
            db.execute("UPDATE orders SET table_id = ? WHERE order_id = ?", (to_table_id, order_id))
            self._bump(db, order_id)
            return self._wire(db, order_id)

    def merge_orders(self, into: str, sources: Iterable[str], *,
                     fences: Mapping[str, int] | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Fold the sources' lines into ``into`` (并桌): ``into`` + 1 version, each source cancelled + 1.

        One transaction: an add-on to a source lands before (and is carried over) or after (and is
        refused ORDER_CLOSED); no line is lost either way.
        """
        fences = fences or {}
        with self._tx() as db:
            self._writable(db, into, fences.get(into))
            for source in sources:
                self._writable(db, source, fences.get(source))
                lines = db.execute("SELECT sku, name, qty, unit_price_cents, source FROM lines"
                                   " WHERE order_id = ? ORDER BY position", (source,)).fetchall()
                for line in lines:
                    n = db.execute("SELECT next_line FROM orders WHERE order_id = ?", (into,)).fetchone()[0]
                    db.execute("UPDATE orders SET next_line = next_line + 1 WHERE order_id = ?", (into,))
                    db.execute("INSERT INTO lines VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                               (into, f"l{n}", n, line["sku"], line["name"], line["qty"], line["unit_price_cents"],
                                line["source"]))
                db.execute("UPDATE orders SET status = 'cancelled' WHERE order_id = ?", (source,))
                self._bump(db, source)
            self._bump(db, into)
            return self._wire(db, into), [self._wire(db, source) for source in sources]

    def reopen(self, order_id: str) -> dict[str, Any]:
        """Reopen a paid or cancelled order (反结账, version + 1); its payment moves to ``reopened_payments``."""
        with self._tx() as db:
            row = db.execute("SELECT status, version, payment_ref, paid_cents, paid_at FROM orders WHERE order_id = ?",
                             (order_id,)).fetchone()
            if row is None:
                raise NotFound(f"order {order_id}")
            if row["status"] == "open":
                return self._wire(db, order_id)
            if row["payment_ref"] is not None:
                db.execute("INSERT INTO reopened_payments VALUES (?, ?, ?, ?, ?, ?)",
                           (order_id, row["version"], row["payment_ref"], row["paid_cents"], row["paid_at"], self._clock()))
            db.execute("UPDATE orders SET status = 'open', payment_ref = NULL, paid_cents = NULL, paid_at = NULL"
                       " WHERE order_id = ?", (order_id,))
            self._bump(db, order_id)
            return self._wire(db, order_id)

    def reopened_payments(self, order_id: str) -> list[dict[str, Any]]:
        """The payments of ``order_id`` made before it was reopened, oldest first."""
        rows = self._conn.execute("SELECT * FROM reopened_payments WHERE order_id = ? ORDER BY reopened_at", (order_id,))
        return [dict(r) for r in rows]

    def accepted_order(self, request_id: str) -> dict[str, Any] | None:
        """The order an already accepted H5 request went into, or None."""
        row = self._conn.execute("SELECT order_id FROM accepted_requests WHERE request_id = ?", (request_id,)).fetchone()
        return None if row is None else self.order(row[0])

    def accept_items(self, order_id: str | None, table_id: str, items: Iterable[Mapping[str, Any]],
                     request_id: str, check: AcceptCheck = ALLOWED) -> tuple[dict[str, Any], bool]:
        """Auto-accept a diner's dishes; returns (order, changed).

        ``order_id`` None means the table's open order, or a new one. ``check`` is the
        coordinator's answer to ``accept_items`` on that order: a refusal raises AcceptRefused
        (the SPEC toast for PAYMENT_LOCKED). A ``request_id`` accepted before returns the order
        unchanged, whatever ``check`` says: the dishes are already in.
        """
        with self._tx() as db:
            done = db.execute("SELECT order_id FROM accepted_requests WHERE request_id = ?", (request_id,)).fetchone()
            if done is not None:
                return self._wire(db, done[0]), False
            if not check.allowed:
                raise AcceptRefused(check.code or "PAYMENT_LOCKED")
            if order_id is None:
                row = db.execute(
                    "SELECT order_id FROM orders WHERE table_id = ? AND status = 'open'"
                    " ORDER BY opened_at DESC, order_id DESC LIMIT 1", (table_id,),
                ).fetchone()
                order_id = row[0] if row else None
            if order_id is None:
                order_id = self._open(db, table_id, None)
                self._add_lines(db, order_id, items, "h5")
            else:
                self._writable(db, order_id, None)
                self._add_lines(db, order_id, items, "h5")
                self._bump(db, order_id)
            db.execute("INSERT INTO accepted_requests VALUES (?, ?)", (request_id, order_id))
            return self._wire(db, order_id), True

    def mark_paid(self, order_id: str, *, version: int, amount_cents: int, payment_ref: str,
                  fence: int | None = None, new_version: bool = False) -> dict[str, Any]:
        """Record the payment of ``version`` (idempotent on ``payment_ref``).

        The version stays: the coordinator marks the same version paid on its side. With
        ``new_version`` (legacy mode, where the ERP pushes the paid order itself) it is bumped.
        """
        with self._tx() as db:
            row = db.execute("SELECT status, payment_ref, version FROM orders WHERE order_id = ?", (order_id,)).fetchone()
            if row is None:
                raise NotFound(f"order {order_id}")
            if row["status"] == "paid" and row["payment_ref"] == payment_ref:
                return self._wire(db, order_id)
            self._writable(db, order_id, fence)
            order = self._wire(db, order_id)
            if version != order["version"]:
                raise VersionMismatch(f"paying version {version}, the ERP has {order['version']}", order=order)
            if amount_cents != order["total_cents"]:
                raise AmountMismatch(f"paying {amount_cents}, the total is {order['total_cents']}")
            db.execute(
                "UPDATE orders SET status = 'paid', payment_ref = ?, paid_cents = ?, paid_at = ?, updated_at = ?"
                " WHERE order_id = ?", (payment_ref, amount_cents, self._clock(), self._clock(), order_id),
            )
            if new_version:
                self._bump(db, order_id)
            return self._wire(db, order_id)

    # --- internals ------------------------------------------------------------------------

    def _open(self, db: sqlite3.Connection, table_id: str, order_id: str | None) -> str:
        if db.execute("SELECT 1 FROM tables WHERE table_id = ?", (table_id,)).fetchone() is None:
            db.execute("INSERT INTO tables VALUES (?, ?)", (table_id, table_id))
        # Counted ids skip any taken by an order opened under an explicit id.
        while order_id is None:
            db.execute("INSERT INTO counters VALUES ('order', 1) ON CONFLICT (name) DO UPDATE SET value = value + 1")
            n = db.execute("SELECT value FROM counters WHERE name = 'order'").fetchone()[0]
            taken = db.execute("SELECT 1 FROM orders WHERE order_id = ?", (f"{self._prefix}{n}",)).fetchone()
            order_id = None if taken else f"{self._prefix}{n}"
        now = self._clock()
        db.execute(
            "INSERT INTO orders (order_id, table_id, version, status, opened_at, updated_at)"
            " VALUES (?, ?, 1, 'open', ?, ?)", (order_id, table_id, now, now),
        )
        return order_id

    def _writable(self, db: sqlite3.Connection, order_id: str, fence: int | None) -> None:
        row = db.execute("SELECT status FROM orders WHERE order_id = ?", (order_id,)).fetchone()
        if row is None:
            raise NotFound(f"order {order_id}")
        if row[0] != "open":
            raise OrderClosed(f"order {order_id} is {row[0]}")
        self._fence(db, order_id, fence)

    def _add_lines(self, db: sqlite3.Connection, order_id: str, items: Iterable[Mapping[str, Any]], source: str) -> None:
        for item in items:
            dish = db.execute("SELECT name, unit_price_cents FROM menu WHERE sku = ?", (item["sku"],)).fetchone()
            if dish is None:
                raise NotFound(f"dish {item['sku']}")
            qty = int(item.get("qty", 1))
            if not 1 <= qty <= 999:
                raise ValueError(f"qty must be 1..999, not {qty}")
            n = db.execute("SELECT next_line FROM orders WHERE order_id = ?", (order_id,)).fetchone()[0]
            db.execute("UPDATE orders SET next_line = next_line + 1 WHERE order_id = ?", (order_id,))
            db.execute("INSERT INTO lines VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (order_id, f"l{n}", n, item["sku"], dish[0], qty, dish[1], source))

    def _bump(self, db: sqlite3.Connection, order_id: str) -> None:
        db.execute("UPDATE orders SET version = version + 1, updated_at = ? WHERE order_id = ?",
                   (self._clock(), order_id))

    @staticmethod
    def _wire(db: sqlite3.Connection, order_id: str) -> dict[str, Any] | None:
        row = db.execute("SELECT order_id, table_id, version, status FROM orders WHERE order_id = ?",
                         (order_id,)).fetchone()
        if row is None:
            return None
        items = [
            dict(r) for r in db.execute(
                "SELECT line_id, sku, name, qty, unit_price_cents, source FROM lines"
                " WHERE order_id = ? ORDER BY position", (order_id,),
            )
        ]
        return {
            "order_id": row["order_id"], "table_id": row["table_id"], "version": row["version"],
            "status": row["status"], "items": items,
            "total_cents": sum(i["qty"] * i["unit_price_cents"] for i in items),
        }
