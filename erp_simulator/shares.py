"""The ERP simulator's books of split-bill payments (SPEC §10, docs/protocol.md A13.5).

Each share's payment is recorded once (idempotent on ``payment_ref``), fenced like every other
write, bound to the version it was taken against, and never above what remains; the order turns
``paid`` when the recorded shares reach its total. Kept apart from ``db.py`` (its own table on the
same SQLite database and transaction) so the till's ordinary books stay as they were.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from .db import ErpDatabase
from .errors import AmountMismatch, NotFound, OrderClosed, VersionMismatch

_SCHEMA = """
CREATE TABLE IF NOT EXISTS share_payments (
    payment_ref  TEXT PRIMARY KEY,
    order_id     TEXT NOT NULL,
    version      INTEGER NOT NULL,
    amount_cents INTEGER NOT NULL CHECK (amount_cents > 0),
    share        TEXT NOT NULL,
    fence        INTEGER,
    paid_at      INTEGER NOT NULL
);
"""


class ShareLedger:
    """Partial payments of orders, on the simulator's database."""

    def __init__(self, db: ErpDatabase) -> None:
        self.db = db
        db._conn.executescript(_SCHEMA)

    def paid_cents(self, order_id: str) -> int:
        """What the recorded shares of the order add up to."""
        row = self.db._conn.execute("SELECT COALESCE(SUM(amount_cents), 0) FROM share_payments WHERE order_id = ?",
                                    (order_id,)).fetchone()
        return int(row[0])

    def pay_share(self, order_id: str, *, version: int, amount_cents: int, payment_ref: str,
                  fence: int | None, share: Mapping[str, Any]) -> dict[str, Any]:
        """Record one share's payment (idempotent on payment_ref); the order is paid when shares reach its total."""
        with self.db._tx() as db:
            if db.execute("SELECT 1 FROM share_payments WHERE payment_ref = ?", (payment_ref,)).fetchone():
                return self._with_paid(db, order_id)
            order = self.db._wire(db, order_id)
            if order is None:
                raise NotFound(f"order {order_id}")
            if order["status"] != "open":
                raise OrderClosed(f"order {order_id} is {order['status']}")
            # Checked against the fences of whole-order grants, and not raised by it: the shares
            # of one order are held side by side, each with its own fence (docs/protocol.md A13).
            self.db._fence(db, order_id, fence, record=False)
            if version != order["version"]:
                raise VersionMismatch(f"paying version {version}, the ERP has {order['version']}", order=order)
            paid = int(db.execute("SELECT COALESCE(SUM(amount_cents), 0) FROM share_payments WHERE order_id = ?",
                                  (order_id,)).fetchone()[0])
            if amount_cents < 1 or paid + amount_cents > order["total_cents"]:
                raise AmountMismatch(f"share of {amount_cents}: {order['total_cents'] - paid} remains")
            now = self.db._clock()
            db.execute("INSERT INTO share_payments VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (payment_ref, order_id, version, amount_cents, json.dumps(dict(share)), fence, now))
            if paid + amount_cents == order["total_cents"]:
                db.execute("UPDATE orders SET status = 'paid', payment_ref = ?, paid_cents = ?, paid_at = ?,"
                           " updated_at = ? WHERE order_id = ?",
                           (payment_ref, paid + amount_cents, now, now, order_id))
            return self._with_paid(db, order_id)

    def _with_paid(self, db: Any, order_id: str) -> dict[str, Any]:
        order = self.db._wire(db, order_id)
        paid = db.execute("SELECT COALESCE(SUM(amount_cents), 0) FROM share_payments WHERE order_id = ?",
                          (order_id,)).fetchone()[0]
        return {**order, "paid_cents": int(paid)}


async def pay_rest(terminal: Any, order_id: str, payment_ref: str) -> dict[str, Any]:
    """收银台收剩余: take "the rest" of a split order under the terminal's own share lock, pay it at the
    till, and record it in the ERP's books (the terminal is the ERP: no order.pay RPC)."""
    order = terminal.db.order(order_id)
    lock = await terminal.client.claim_share(order_id, {"rest": True}, expected_version=order["version"])
    amount = lock["share"]["amount_cents"]
    paid = await terminal.client.pay_share(order_id, token=lock["token"], amount_cents=amount,
                                           version=lock["version"], payment_ref=payment_ref)
    ShareLedger(terminal.db).pay_share(order_id, version=lock["version"], amount_cents=amount,
                                       payment_ref=payment_ref, fence=lock["fence"], share=lock["share"])
    return paid
