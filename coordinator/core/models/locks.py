"""Locks and their holders (SPEC §4 Lock, Holder) and the bodies of the lock endpoints (SPEC §5)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, SerializerFunctionWrapHandler, StringConstraints, model_serializer
from pydantic.json_schema import SkipJsonSchema

from coordinator.core.models.base import Body, Cents, Millis, Token, Version
from coordinator.core.models.orders import Order, Share
from coordinator.core.rules import Action, Kind


class ErpHolder(BaseModel):
    """An ERP terminal holding a lock, as ERP viewers and admins see it."""

    role: Literal["erp"] = "erp"
    terminal_id: str
    name: str
    online: bool = False


class H5Holder(BaseModel):
    """An H5 session holding a lock, as ERP viewers and admins see it."""

    role: Literal["h5"] = "h5"
    session_id: str


class ViewerHolder(BaseModel):
    """A holder as an H5 viewer sees it: no ids, only whether it is the viewer."""

    role: Literal["erp", "h5"]
    is_me: bool


class Lock(BaseModel):
    """A lock; ``token`` appears only in the holder's own responses."""

    kind: Kind
    order_id: str
    table_id: str
    holder: ErpHolder | H5Holder | ViewerHolder
    fence: int
    version: int | None
    acquired_at: Millis
    expires_at: Millis
    token: str | None = None
    completing: bool = False
    #: H5 payment locks (SPEC §9): claimed (checkout) → in_flight (provider order open) → completing.
    phase: Literal["claimed", "in_flight", "completing"] | None = None
    out_trade_no: str | None = None
    provider: str | None = None
    #: A split-bill share lock's share (SPEC §10); absent on whole-order locks.
    share: Share | None = None

    @model_serializer(mode="wrap")
    def _without_empty_share(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Whole-order locks read exactly as before shares existed.
        data = handler(self)
        if data.get("share", 0) is None:
            del data["share"]
        return data


class LockView(Lock):
    """A lock as anyone but its holder sees it: no ``token`` key at all (SPEC §4, invariant 6)."""

    token: SkipJsonSchema[str | None] = Field(default=None, exclude=True)


class LockRequest(Body):
    """POST .../locks."""

    kind: Kind
    force: bool = False
    expected_version: Version | None = None
    #: Force although the provider could not say whether the diner's in-flight payment went through.
    force_unverified: bool = False


class TokenBody(Body):
    """A body that presents a lock token (renew, release, checkout/cancel)."""

    token: Token


class CheckRequest(Body):
    """POST .../check."""

    action: Action


class PaymentRequest(Body):
    """POST .../payments and /h5/payments."""

    token: Token
    amount_cents: Cents
    version: Version
    payment_ref: Annotated[str, StringConstraints(min_length=1, max_length=128)]


class LockGrant(BaseModel):
    """201 of a lock request; ``enforced`` is false in legacy mode (nothing was stored)."""

    lock: Lock
    enforced: bool = True


class LockResponse(BaseModel):
    """200 of renew."""

    lock: Lock


class Released(BaseModel):
    """200 of release."""

    released: bool


class CheckResult(BaseModel):
    """200 of check."""

    allowed: bool
    code: str | None
    message: str | None
    message_en: str | None
    force_allowed: bool


class OrderWithLocks(BaseModel):
    """An order and its live locks."""

    order: Order
    locks: list[Lock]


class OrderWithLockViews(OrderWithLocks):
    """GET /stores/{s}/orders/{o}: the order and its live locks, without tokens."""

    locks: list[LockView]


class LockList(BaseModel):
    """Live locks."""

    locks: list[Lock]


class LockViewList(LockList):
    """GET /stores/{s}/locks and the admin lock board: the store's live locks, without tokens."""

    locks: list[LockView]

