"""ERP terminal endpoints of the split bill (SPEC §10, docs/protocol.md A13): a share under the terminal's
own payment lock (typically "the rest"), given back, or paid at the till (the terminal is the ERP).
"""

from __future__ import annotations

from coordinator.api.routing import Call, Reply, Router
from coordinator.core import views
from coordinator.core.models import Lock, LockGrant, Order, OrderResponse, PaymentRequest, Released, ShareClaimRequest, TokenBody
from coordinator.store.share_book import ShareBook

router = Router("erp")

_SHARES = "/stores/{store_id}/orders/{order_id}/shares"


def _ids(call: Call) -> tuple[str, str]:
    return call.path["store_id"], call.path["order_id"]


@router.route("POST", _SHARES, auth=("erp",), body=ShareClaimRequest, responses={201: LockGrant}, errors=(409,))
async def claim_share(call: Call) -> Reply:
    """Take a share of the order (lines, parts, an amount or the rest) under a payment lock of its own."""
    store_id, order_id = _ids(call)
    body: ShareClaimRequest = call.body
    lock, _ = await ShareBook(call.services.engine).claim(
        store_id, order_id, call.principal.holder(), body.share.spec(), expected_version=body.expected_version,
    )
    return Reply(201, LockGrant(lock=Lock.model_validate(views.own_lock(lock))))


@router.route("POST", _SHARES + "/release", auth=("erp",), body=TokenBody, responses={200: Released})
async def release_share(call: Call) -> Reply:
    """Give the share lock back; ``released`` is false when the token holds no live share lock."""
    store_id, order_id = _ids(call)
    released = await ShareBook(call.services.engine).end(store_id, order_id, call.principal.holder(), call.body.token)
    return Reply(200, Released(released=released))


@router.route("POST", _SHARES + "/payments", auth=("erp",), body=PaymentRequest, responses={200: OrderResponse},
              errors=(409,))
async def pay_share(call: Call) -> Reply:
    """Pay the terminal's own share at the till: checked and recorded in one step (the order is paid when shares reach the total)."""
    store_id, order_id = _ids(call)
    payment: PaymentRequest = call.body
    reply = await ShareBook(call.services.engine).pay(
        store_id, order_id, call.principal.holder(), token=payment.token, amount_cents=payment.amount_cents,
        version=payment.version, payment_ref=payment.payment_ref, mode="self",
    )
    return Reply(200, OrderResponse(order=Order.model_validate(reply["order"])))
