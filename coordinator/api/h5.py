"""H5 (diner) endpoints of SPEC §5: parse, call ``H5Service`` (``coordinator/h5/``), shape the reply.

There is no H5 completion (SPEC §9 "Trust"): a diner starts a provider payment
(``api/payments.py``) and the provider's verified notification completes it.

A session is bound to one table (invariant 6): the handlers pass the service the session's
``Diner`` and nothing else of the request. Errors are the service's; ``middleware.py`` words them.
"""

from __future__ import annotations

from coordinator.api.routing import Call, Reply, Router
from coordinator.core.models import (
    Checkout,
    CheckoutRequest,
    H5TableView,
    ItemsRequest,
    Menu,
    OrderResponse,
    SessionCreated,
    SessionRequest,
    TokenBody,
)
from coordinator.h5 import Diner, H5Service
from coordinator.payments.records import CheckoutCancelled

router = Router("h5")


def _service(call: Call) -> H5Service:
    return call.services.h5


def _diner(call: Call) -> Diner:
    me = call.principal
    return Diner(store_id=me.store_id, table_id=me.table_id, session_id=me.session_id)


@router.route("POST", "/h5/sessions", auth=("public",), body=SessionRequest,
              responses={201: SessionCreated}, errors=(401,))
async def create_session(call: Call) -> Reply:
    """Open a diner's session on the table a genuine QR code names (401 if forged or rotated)."""
    return Reply(201, await _service(call).open_session(call.body.qr_token))


@router.route("GET", "/h5/table", auth=("h5",), responses={200: H5TableView})
async def get_table(call: Call) -> Reply:
    """Everything the diner's page shows of its table: the open order, its locks, the config."""
    return Reply(200, await _service(call).table(_diner(call)))


@router.route("GET", "/h5/menu", auth=("h5",), responses={200: Menu}, errors=(503,))
async def get_menu(call: Call) -> Reply:
    """The store's menu from the ERP (cached a minute; the last one while the ERP is unreachable)."""
    return Reply(200, await _service(call).menu(_diner(call)))


@router.route("POST", "/h5/items", auth=("h5",), body=ItemsRequest, responses={200: OrderResponse},
              errors=(409,))
async def add_items(call: Call) -> Reply:
    """Add dishes to the table's order through the ERP (it opens one if none); idempotent on request_id."""
    order = await _service(call).add_items(_diner(call), call.body)
    return Reply(200, OrderResponse(order=order))


@router.route("POST", "/h5/checkout", auth=("h5",), body=CheckoutRequest, responses={201: Checkout},
              errors=(409,))
async def checkout(call: Call) -> Reply:
    """Pull the table's order from the ERP and take the H5 payment lock bound to that version."""
    share = call.body.share.spec() if call.body.share is not None else None  # split bill (SPEC §10)
    return Reply(201, await _service(call).checkout(_diner(call), force=call.body.force, share=share))


@router.route("POST", "/h5/checkout/cancel", auth=("h5",), body=TokenBody, responses={200: CheckoutCancelled})
async def cancel_checkout(call: Call) -> Reply:
    """Give the H5 payment lock back; ``released`` is false when the token holds nothing releasable."""
    payments = call.services.payments
    if payments is not None:
        # An in-flight provider payment is closed at the provider first (payments/service.py).
        me = call.principal
        outcome = await payments.service.cancel(me.store_id, me.table_id, me.holder(), call.body.token)
        return Reply(200, CheckoutCancelled(**outcome))
    return Reply(200, await _service(call).cancel_checkout(_diner(call), call.body.token))
