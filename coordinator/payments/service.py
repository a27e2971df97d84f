"""PaymentService: the H5 payment flows over a provider (SPEC §9), callable without HTTP.

    start   claimed lock ──pay_start.lua──▶ in_flight, then provider.create (failure ends the lock)
    notify  verify with the store's adapter ──▶ Settlement (capture / end / refund state)
    cancel  provider.close first (paid meanwhile → completes instead), then the lock ends
    force   an ERP force on an in-flight payment asks the provider first (see ``before_force``)
"""

from __future__ import annotations

import hmac
import logging
import secrets
from collections.abc import Mapping
from typing import Any

from coordinator.core.errors import (
    LockLost, NotFound, PaidMeanwhile, PaymentUnavailable, PaymentUnverified, Unauthenticated,
)
from coordinator.core.rules import Kind
from coordinator.payments.ledger import PaymentLedger, TradeExists
from coordinator.payments.providers import (
    Ack, CreateOrder, InvalidNotification, ProviderError, ProviderRejected, ProviderUnreachable,
)
from coordinator.payments.records import PaymentRecord
from coordinator.payments.settlement import Settlement
from coordinator.payments.vault import ProviderNotConfigured, ProviderVault
from coordinator.store.share_book import ShareBook

log = logging.getLogger(__name__)
_B36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def new_trade_no(now_ms: int) -> str:
    """A merchant trade number: "TL" + base-36 ms + 16 hex digits (26 chars of [0-9A-Za-z])."""
    digits, n = "", now_ms
    while n:
        n, r = divmod(n, 36)
        digits = _B36[r] + digits
    return f"TL{digits}{secrets.token_hex(8)}"


class PaymentService:
    """Start, cancel and settle diners' provider payments; vet ERP forces against them."""

    def __init__(self, ledger: PaymentLedger, vault: ProviderVault, settlement: Settlement, *,
                 public_url: str) -> None:
        self.ledger = ledger
        self.engine = ledger.engine
        self.vault = vault
        self.settlement = settlement
        self.public_url = public_url.rstrip("/")

    def notify_url(self, store_id: str, provider: str) -> str:
        """Where the provider posts its notifications for this store."""
        return f"{self.public_url}/api/v1/payments/notify/{provider}/{store_id}"

    async def paying_order(self, store_id: str, table_id: str, token: str) -> tuple[str, dict[str, Any]] | None:
        """The table's open order whose live payment lock has ``token``, with that lock."""
        for order_id, (table, _) in (await self.engine.open_orders(store_id)).items():
            if table != table_id:
                continue
            _, locks = await self.engine.get_order(store_id, order_id)
            for lock in locks:
                if lock["kind"] == Kind.PAYMENT.value and hmac.compare_digest(lock["token"].encode(), token.encode()):
                    return order_id, lock
        return None

    async def start(self, store_id: str, table_id: str, holder: dict[str, Any], *, token: str,
                    provider: str, client_ip: str = "127.0.0.1") -> dict[str, Any]:
        """Open the provider order for the session's claimed lock; returns StartedPayment fields."""
        if not (await self.engine.config(store_id)).strong_link_enabled:
            # Legacy mode stores no lock to bind a provider order to: the diner pays at the till.
            raise PaymentUnavailable()
        found = await self.paying_order(store_id, table_id, token)
        if found is None:
            raise LockLost()
        order_id, _ = found
        try:
            adapter = await self.vault.adapter(store_id, provider)
        except ProviderNotConfigured:
            raise PaymentUnavailable() from None
        for _attempt in range(3):
            trade_no = new_trade_no(await self.engine.now())
            try:
                began = await self.ledger.start(store_id, order_id, holder, token=token,
                                                out_trade_no=trade_no, provider=provider)
                break
            except TradeExists:
                continue
        else:  # pragma: no cover - three collisions of 64 random bits
            raise PaymentUnavailable()
        lock = began["lock"]
        if began.get("existing"):
            record = await self.ledger.get(store_id, lock["out_trade_no"])
            assert record is not None
            return self._started(record, lock)
        record = await self.ledger.get(store_id, trade_no)
        assert record is not None and record.provider_expires_at is not None
        try:
            created = await adapter.create(CreateOrder(
                out_trade_no=trade_no, amount_cents=record.amount_cents,
                description=f"订单 {order_id}", expires_at=record.provider_expires_at,
                notify_url=self.notify_url(store_id, provider), return_url=f"{self.public_url}/h5/",
                payer_client_ip=client_ip,
            ))
        except ProviderError as exc:
            log.warning("provider %s could not open trade %s/%s: %r", provider, store_id, trade_no, exc)
            await self.ledger.end(store_id, record, state="failed", end_lock=True, reason="payment_failed")
            raise PaymentUnavailable() from None
        await self.ledger.update(store_id, trade_no, pay_url=created.pay_url or "")
        record = record.model_copy(update={"pay_url": created.pay_url})
        started = self._started(record, lock)
        started["jsapi"] = created.jsapi.model_dump() if created.jsapi else None
        return started

    @staticmethod
    def _started(record: PaymentRecord, lock: dict[str, Any]) -> dict[str, Any]:
        return {"out_trade_no": record.out_trade_no, "provider": record.provider, "pay_url": record.pay_url,
                "amount_cents": record.amount_cents, "expires_at": lock["expires_at"], "lock": lock}

    async def notify(self, provider: str, store_id: str, headers: Mapping[str, str], body: bytes) -> Ack:
        """Verify and apply one provider notification; returns the provider's ack (401 when unverifiable)."""
        try:
            adapter = await self.vault.adapter(store_id, provider)
        except ProviderNotConfigured:
            raise NotFound() from None
        try:
            note = adapter.verify_notification(headers, body)
        except InvalidNotification as exc:
            log.warning("notification for %s/%s refused: %s", provider, store_id, exc)
            status, content_type, payload = adapter.ack(False)
            return Ack(401, content_type, payload)
        if note.provider != provider:
            raise Unauthenticated()
        await self.settlement.notification(store_id, note)
        return adapter.ack(True)

    async def cancel(self, store_id: str, table_id: str, holder: dict[str, Any], token: str) -> dict[str, Any]:
        """Cancel the diner's checkout: close the provider order first, then end the lock.

        Returns ``{released, paid}``: ``paid`` when the provider had the money already (the
        payment then completes as if notified).
        """
        found = await self.paying_order(store_id, table_id, token)
        if found is None:
            return {"released": False, "paid": False}
        order_id, lock = found
        record = await self.ledger.get(store_id, lock["out_trade_no"]) if lock.get("out_trade_no") else None
        if record is None or lock.get("completing"):
            return {"released": await self._release(store_id, order_id, lock, token, holder), "paid": False}
        outcome = await self._close_or_capture(store_id, record, source="cancel")
        if outcome == "paid":
            return {"released": False, "paid": True}
        if outcome == "closed":
            reply = await self.ledger.end(store_id, record, state="closed", end_lock=True, reason="released",
                                          actor=holder)
            return {"released": bool(reply.get("lock_ended")), "paid": False}
        # The provider cannot be reached: the lock ends anyway (the diner walks to the till); the
        # trade stays in flight for the poller, and money that still arrives becomes a surplus.
        return {"released": await self._release(store_id, order_id, lock, token, holder), "paid": False}

    async def _release(self, store_id: str, order_id: str, lock: dict[str, Any], token: str,
                       holder: dict[str, Any]) -> bool:
        """End the diner's payment lock: a split-bill share's (SPEC §10) or the whole order's."""
        if lock.get("share"):
            return await ShareBook(self.engine).end(store_id, order_id, holder, token)
        return await self.engine.release(store_id, order_id, Kind.PAYMENT, token, holder)

    async def before_force(self, store_id: str, order_id: str, *, unverified_ok: bool) -> None:
        """Vet an ERP force against an in-flight H5 payment of the order (SPEC §9.6).

        Paid at the provider → the payment completes and the force is refused (PaidMeanwhile).
        Not paid → the provider order is closed, the force may proceed. Provider unreachable →
        refused with PaymentUnverified unless the terminal confirmed (``unverified_ok``).
        """
        _, locks = await self.engine.get_order(store_id, order_id)
        # Several may be in flight at once: the diners' shares of a split bill (SPEC §10).
        for lock in locks:
            if lock["kind"] != Kind.PAYMENT.value or lock.get("phase") != "in_flight" or lock.get("completing"):
                continue
            record = await self.ledger.get(store_id, lock["out_trade_no"])
            if record is None or record.state != "in_flight":
                continue
            outcome = await self._close_or_capture(store_id, record, source="force")
            if outcome == "paid":
                raise PaidMeanwhile()
            if outcome == "closed":
                await self.ledger.end(store_id, record, state="closed", end_lock=False, reason="forced")
            elif not unverified_ok:
                raise PaymentUnverified()

    async def _close_or_capture(self, store_id: str, record: PaymentRecord, *, source: str) -> str:
        """Ask the provider about an in-flight trade and close it unless paid: "paid" | "closed" | "unknown"."""
        try:
            adapter = await self.vault.adapter(store_id, record.provider)
            for _ in range(2):
                answer = await adapter.query(record.out_trade_no)
                if answer.status == "paid" and answer.transaction_id:
                    reply = await self.settlement.paid(
                        store_id, record.out_trade_no, provider=record.provider,
                        transaction_id=answer.transaction_id, amount_cents=answer.amount_cents,
                        paid_at=answer.paid_at, source=source,
                    )
                    return "paid" if reply["outcome"] in ("completing", "duplicate") else "closed"
                if answer.status != "pending":
                    return "closed"
                try:
                    await adapter.close(record.out_trade_no)
                    return "closed"
                except ProviderRejected as exc:
                    # Paid between our query and the close (or already closed): ask once more.
                    log.info("close of %s refused (%s): asking again", record.out_trade_no, exc.code)
            return "unknown"
        except (ProviderUnreachable, ProviderNotConfigured):
            return "unknown"
        except ProviderError as exc:
            log.warning("provider error on %s/%s: %r", store_id, record.out_trade_no, exc)
            return "unknown"

