"""The error tree (``core/errors.py``) and the one place that words it (``api/middleware.py``):
no raisable base, every leaf with its SPEC code, 404 for an unknown path, 405 only for a wrong
method, 500 INTERNAL with nothing of the bug in it."""

from __future__ import annotations

import pytest
from aiohttp import web

from coordinator.api.middleware import errors_middleware
from coordinator.core.errors import (
    BY_CODE,
    MESSAGES,
    Conflict,
    ErpUnreachable,
    InternalError,
    LockConflict,
    MethodNotAllowed,
    RateLimited,
    TablelockError,
)
from coordinator.core.rules import Action, Role
from coordinator.realtime.erp_answers import erp_error, unreachable


def _leaves(cls: type[TablelockError]) -> list[type[TablelockError]]:
    subs = cls.__subclasses__()
    return [leaf for sub in subs for leaf in _leaves(sub)] if subs else [cls]


@pytest.mark.parametrize("abstract", [TablelockError, Conflict])
def test_the_bases_have_no_wire_code_and_cannot_be_raised(abstract):
    """TablelockError and Conflict are branches of the tree: building one is a TypeError, never a 500 UNAVAILABLE."""
    with pytest.raises(TypeError):
        abstract()


def test_every_leaf_has_a_status_a_code_and_messages():
    """Each raisable error has an HTTP status and a SPEC code with zh-CN and English texts."""
    leaves = [leaf for leaf in _leaves(TablelockError) if leaf not in (LockConflict, MethodNotAllowed, RateLimited)]
    assert InternalError in leaves and len(leaves) >= 12
    for leaf in leaves:
        error = leaf()
        assert 400 <= error.status < 600 and error.code in MESSAGES
        assert error.body()["error"]["code"] == error.code
    assert all(cls.code == code for code, cls in BY_CODE.items())


def test_internal_error_is_a_500_of_its_own():
    """A coordinator bug is 500 INTERNAL, not a 503 UNAVAILABLE (which means Redis is down)."""
    error = InternalError()
    assert (error.status, error.code, error.message_en) == (500, "INTERNAL", "Internal error")


def test_erp_code_is_a_declared_field():
    """Every error has erp_code: None by default, the ERP's own code when it stands for a refusal."""
    assert ErpUnreachable().erp_code is None
    assert LockConflict("PAYMENT_LOCKED", Role.H5, Action.PAY).erp_code is None
    assert unreachable("timeout", "order.pay").erp_code == "ERP_UNREACHABLE"
    assert erp_error("order.pay", {"code": "PRESETTLED", "message": "x"}).erp_code == "PRESETTLED"
    assert erp_error("order.pay", {"code": "CARD_DECLINED"}).erp_code == "CARD_DECLINED"


def test_errors_carry_their_own_headers():
    """Retry-After and Allow come from the error itself."""
    assert RateLimited(7).headers() == {"Retry-After": "7"}
    assert MethodNotAllowed({"POST", "GET"}).headers() == {"Allow": "GET, POST"}
    assert InternalError().headers() == {}


@pytest.fixture
async def bare(aiohttp_client):
    """An app with only the error middleware, a GET route and a route with a bug."""

    async def fine(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def buggy(request: web.Request) -> web.Response:
        raise RuntimeError("secret detail /srv/app.py line 3")

    app = web.Application(middlewares=[errors_middleware])
    app.router.add_get("/api/v1/thing", fine)
    app.router.add_get("/api/v1/buggy", buggy)
    return await aiohttp_client(app)


async def test_an_unknown_path_is_404_not_found(bare):
    """A path no route has is 404 NOT_FOUND, whatever the method."""
    for method in ("GET", "POST", "DELETE"):
        resp = await bare.request(method, "/api/v1/nothing-here")
        assert resp.status == 404 and (await resp.json())["error"]["code"] == "NOT_FOUND"


async def test_a_wrong_method_is_405_method_not_allowed_with_allow(bare):
    """A known path with another method is 405 METHOD_NOT_ALLOWED (it was a 405 saying NOT_FOUND)."""
    resp = await bare.post("/api/v1/thing")
    body = await resp.json()
    assert resp.status == 405 and body["error"]["code"] == "METHOD_NOT_ALLOWED"
    assert "GET" in resp.headers["Allow"]


async def test_a_bug_is_500_internal_without_its_detail(bare):
    """An unhandled exception is the SPEC body with code INTERNAL, and nothing of the exception."""
    resp = await bare.get("/api/v1/buggy")
    text = await resp.text()
    assert resp.status == 500 and (await resp.json())["error"]["code"] == "INTERNAL"
    assert "secret detail" not in text and "Traceback" not in text


async def test_the_coordinator_answers_404_and_405_the_same_way(client):
    """The real app: an unknown API path is 404, GET of a POST-only endpoint is 405."""
    resp = await client.get("/api/v1/no/such/path")
    assert resp.status == 404 and (await resp.json())["error"]["code"] == "NOT_FOUND"
    resp = await client.get("/api/v1/h5/checkout")
    assert resp.status == 405 and (await resp.json())["error"]["code"] == "METHOD_NOT_ALLOWED"
    assert resp.headers["Allow"] == "POST"
