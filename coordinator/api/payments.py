"""Payment endpoints of SPEC §9: the diner starts a provider payment; providers post notifications.

There is deliberately no endpoint by which an H5 session marks an order paid (SPEC §9 "Trust"):
money is believed only from a provider's verified notification or the provider's own query answer.
"""

from __future__ import annotations

from typing import Literal

from aiohttp import web
from coordinator.api.routing import Call, Reply, Router
from coordinator.core import views
from coordinator.core.models import Body, Lock, Token
from coordinator.payments.records import StartedPayment

router = Router("payments")
notify_router = Router("payments", limit_public=False)


class StartPayment(Body):
    """POST /h5/payments/start: the claimed lock's token and the provider the diner chose."""

    token: Token
    provider: Literal["wechatpay", "alipay"]


@router.route("POST", "/h5/payments/start", auth=("h5",), body=StartPayment, responses={201: StartedPayment},
              errors=(409, 503))
async def start_payment(call: Call) -> Reply:
    """Open the provider order for the claimed payment lock; the lock goes in flight (not renewable)."""
    me = call.principal
    started = await call.services.payments.service.start(
        me.store_id, me.table_id, me.holder(), token=call.body.token, provider=call.body.provider,
        client_ip=call.request.remote or "127.0.0.1",
    )
    started["lock"] = Lock.model_validate(views.own_lock(started["lock"]))
    return Reply(201, StartedPayment.model_validate(started))


@notify_router.route("POST", "/payments/notify/{provider}/{store_id}", auth=("public",),
                     responses={200: "application/json"}, errors=(401,))
async def notify(call: Call) -> web.Response:
    """A provider's payment or refund notification (verified with the store's provider settings)."""
    body = await call.request.read()
    ack = await call.services.payments.service.notify(
        call.path["provider"], call.path["store_id"], call.request.headers, body,
    )
    content_type, _, charset = ack.content_type.partition(";")
    return web.Response(status=ack.status, body=ack.body, content_type=content_type.strip(),
                        charset=charset.split("=", 1)[1].strip() if "=" in charset else None)
