"""ErpLocks: what an ERP terminal may ask about an order's locks, whatever carries the request.

Every method takes the asking terminal (its ``Principal``, authenticated by the transport), the
ids the request names and its validated body, and returns the response model the HTTP API
documents. The scope checks (the terminal's own store) are the transport's, done before a method
is called.
"""

from __future__ import annotations

from typing import Any

from coordinator.core import views
from coordinator.core.errors import lock_message
from coordinator.core.models import (
    CheckResult,
    Lock,
    LockGrant,
    LockRequest,
    LockResponse,
    Order,
    OrderResponse,
    PaymentRequest,
    Released,
)
from coordinator.core.rules import ACTION_KIND, Action, Kind, Role
from coordinator.payments.service import PaymentService
from coordinator.store.auth import Principal
from coordinator.store.engine import LockEngine


class ErpLocks:
    """Lock, renew, release, check and complete for ERP terminals (SPEC §2, §5)."""

    def __init__(self, engine: LockEngine, payments: PaymentService | None = None) -> None:
        self.engine = engine
        #: None when the process runs without provider payments (then no diner's payment is in flight).
        self.payments = payments

    async def take(self, store_id: str, order_id: str, terminal: Principal, request: LockRequest) -> LockGrant:
        """Take an order, presettle or payment lock (with ``force`` after the user confirmed)."""
        if request.force and self.payments is not None:
            # A diner's payment in flight is asked about at the provider before it may be broken (SPEC §9.6).
            await self.payments.before_force(store_id, order_id, unverified_ok=request.force_unverified)
        lock, enforced = await self.engine.acquire(
            store_id, order_id, terminal.holder(), request.kind,
            force=request.force, expected_version=request.expected_version,
            credential=terminal.credential, online=True,  # one round trip: the script checks and reads presence
        )
        return LockGrant(lock=Lock.model_validate(views.own_lock(lock)), enforced=enforced)

    async def renew(self, store_id: str, order_id: str, terminal: Principal, kind: Kind, token: str) -> LockResponse:
        """Extend the terminal's lock to now + the kind's duration; LOCK_LOST when it is gone."""
        lock = await self.engine.renew(store_id, order_id, kind, token, terminal.holder(),
                                       credential=terminal.credential, online=True)
        return LockResponse(lock=Lock.model_validate(views.own_lock(lock)))

    async def release(self, store_id: str, order_id: str, terminal: Principal, kind: Kind, token: str) -> Released:
        """Give the lock back; ``released`` is false when the token holds nothing releasable."""
        released = await self.engine.release(store_id, order_id, kind, token, terminal.holder(),
                                             credential=terminal.credential)
        return Released(released=released)

    async def check(self, store_id: str, order_id: str, terminal: Principal, action: Action) -> CheckResult:
        """Say whether an action is allowed on the order now, with the text to show if not."""
        decision = await self.engine.check(store_id, order_id, terminal.holder(), action,
                                           credential=terminal.credential)
        return check_result(decision.allowed, decision.code, decision.force_allowed, action)

    async def complete(self, store_id: str, order_id: str, terminal: Principal,
                       payment: PaymentRequest) -> OrderResponse:
        """Complete the terminal's own payment: it is the ERP, so check and mark paid are one step."""
        reply = await self.engine.complete(
            store_id, order_id, terminal.holder(), token=payment.token, amount_cents=payment.amount_cents,
            version=payment.version, payment_ref=payment.payment_ref,
        )
        return OrderResponse(order=Order.model_validate(reply["order"]))


def check_result(allowed: bool, code: Any, force_allowed: bool, action: Action) -> CheckResult:
    """The CheckResult of a decision, as an ERP terminal reads it."""
    if allowed:
        return CheckResult(allowed=True, code=None, message=None, message_en=None, force_allowed=False)
    # Only a lock request can be repeated with force; dishes cannot be added under a payment or
    # presettle lock "whoever asks" (SPEC §2), so the remedy the terminal shows is to cancel it.
    # For an ERP terminal adding dishes and accepting a diner's dishes are the same act (接单).
    force_allowed = force_allowed and action in ACTION_KIND
    shown = Action.ACCEPT_ITEMS if action is Action.ADD_ITEMS else action
    message, message_en = lock_message(code, Role.ERP, shown, force_allowed)
    return CheckResult(allowed=False, code=str(code), message=message, message_en=message_en,
                       force_allowed=force_allowed)
