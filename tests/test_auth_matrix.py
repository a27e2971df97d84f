"""Who may call what: every endpoint declared in ``coordinator.app.ROUTERS`` × every kind of caller.

The expectation for each (endpoint, caller) is derived from the endpoint's declared ``auth``
tuple, so an endpoint added to any router is covered without touching this file. "Passes auth"
means any status but 401/403 (the request body is ``{}``, so most end in 400 or 404 — after auth).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest

from coordinator.api.routing import PREFIX, Endpoint
from coordinator.app import ROUTERS
from coordinator.core.models import SessionRequest, StoreConfigPatch
from coordinator.core.rules import Kind
from coordinator.store.auth import Authenticator
from tests.support.app import ADMIN_TOKEN, SYSTEM, bearer, services

ENDPOINTS = [endpoint for router in ROUTERS for endpoint in router.endpoints]

#: What each path parameter is filled with: the seeded shop's ids (the store is set per test).
#: An unknown terminal id keeps an admin DELETE from revoking a terminal the matrix still uses.
PATH_VALUES = {"order_id": "o1", "kind": "order", "table_id": "T1", "terminal_id": "Tnobody", "provider": "wechatpay",
               "request_id": "rnobody"}

ROLES = ("none", "garbage", "admin", "erp_own", "erp_other_store", "h5_own", "h5_other_table",
         "revoked_terminal", "expired_session", "forged_qr")


@dataclass
class Callers:
    """A token per role, and what the T1 side has that a T2 session must never see."""

    tokens: dict[str, str | None]
    forged_qr: str
    t1_secrets: tuple[str, ...]


def expected(endpoint: Endpoint, role: str) -> int | None:
    """401 or 403 when ``role`` must be refused by ``endpoint``; None when it must pass auth."""
    public = endpoint.auth == ("public",)
    if role == "forged_qr":
        return 401 if endpoint.body is SessionRequest or not public else None
    if public:
        return None
    if role in ("none", "garbage", "revoked_terminal", "expired_session"):
        return 401
    allowed = {"admin": "admin", "erp_own": "erp", "erp_other_store": "erp",
               "h5_own": "h5", "h5_other_table": "h5"}[role]
    if allowed not in endpoint.auth:
        return 403
    if role == "erp_other_store" and "{store_id}" in endpoint.path:
        return 403
    return None


def fill(path: str, store_id: str) -> str:
    """The endpoint's path with every parameter filled for the seeded shop."""
    values = {**PATH_VALUES, "store_id": store_id}

    def value(match: re.Match) -> str:
        name = match.group(1)
        assert name in values, f"no test value for path parameter {{{name}}}: add it to PATH_VALUES"
        return values[name]

    return PREFIX + re.sub(r"{(\w+)}", value, path)


@pytest.fixture
async def callers(client, shop, uid, settings) -> Callers:
    """Tokens of every role around the shop; T1 has an order with a diner's payment lock on it."""
    svc = services(client)
    directory, engine = svc.directory, svc.engine
    # Fast ERP RPC failures for endpoints that call the (absent) master terminal.
    await directory.patch_config(shop.store_id, StoreConfigPatch(erp_rpc_timeout_ms=100), SYSTEM)
    await directory.put_table(shop.store_id, "T2", "二号桌", SYSTEM)
    await directory.put_store(f"x-{uid}", "别家", SYSTEM)
    stranger = await directory.register_terminal(f"x-{uid}", "别家收银", True, SYSTEM)
    revoked = await directory.register_terminal(shop.store_id, "已停用", False, SYSTEM)
    await directory.revoke_terminal(shop.store_id, revoked.terminal_id, SYSTEM)

    now = await engine.now()
    t1_token, t1_session, _ = svc.auth.new_session(shop.store_id, "T1", now)
    t2_token, _, _ = svc.auth.new_session(shop.store_id, "T2", now)
    signer = Authenticator(None, admin_token="unused", secret_key=settings.secret_key.get_secret_value(),
                           session_ttl_ms=1_000)
    expired, _, _ = signer.new_session(shop.store_id, "T1", now=now - 60_000)
    lock, _ = await engine.acquire(shop.store_id, "o1", {"role": "h5", "session_id": t1_session}, Kind.PAYMENT)

    forged = shop.qr[:-4] + ("AAAA" if not shop.qr.endswith("AAAA") else "BBBB")
    tokens = {
        "none": None, "garbage": "garbage-token", "admin": ADMIN_TOKEN, "erp_own": shop.a,
        "erp_other_store": stranger.token, "h5_own": t1_token, "h5_other_table": t2_token,
        "revoked_terminal": revoked.token, "expired_session": expired, "forged_qr": forged,
    }
    return Callers(tokens, forged, ('"o1"', '"T1"', "一号桌", t1_session, lock["token"]))


def test_the_matrix_covers_the_erp_and_h5_endpoints():
    """The endpoint list the matrix runs over holds at least the ERP and H5 endpoints of SPEC §5."""
    declared = {(e.method, e.path) for e in ENDPOINTS}
    assert {("PUT", "/stores/{store_id}/orders/{order_id}"), ("POST", "/stores/{store_id}/orders/{order_id}/locks"),
            ("POST", "/stores/{store_id}/orders/{order_id}/payments"), ("POST", "/h5/sessions"),
            ("GET", "/h5/table")} <= declared


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=[f"{e.method} {e.path}" for e in ENDPOINTS])
async def test_every_endpoint_admits_exactly_its_declared_callers(client, shop, callers, endpoint):
    """Each caller gets 401/403 or passes auth exactly as the endpoint's auth tuple says."""
    url = fill(endpoint.path, shop.store_id)
    wrong = []
    for role in ROLES:
        token = callers.tokens[role]
        body = None
        if endpoint.body is not None:
            body = {"qr_token": callers.forged_qr} if role == "forged_qr" and endpoint.body is SessionRequest else {}
        resp = await client.request(endpoint.method, url, json=body, headers=bearer(token) if token else {})
        text = (await resp.read()).decode(errors="replace")  # qr.png is binary
        want = expected(endpoint, role)
        if want is None and resp.status in (401, 403) or want is not None and resp.status != want:
            wrong.append(f"{role}: got {resp.status}, want {want or 'not 401/403'}: {text[:200]}")
        elif want is not None:
            code = {401: "UNAUTHENTICATED", 403: "FORBIDDEN"}[want]
            if f'"code": "{code}"' not in text and f'"code":"{code}"' not in text:
                wrong.append(f"{role}: {want} without the {code} error body: {text[:200]}")
        if role == "h5_other_table":
            leaked = [s for s in callers.t1_secrets if s in text]
            if leaked:
                wrong.append(f"{role}: a T2 session saw T1's {leaked}: {text[:200]}")
    assert not wrong, "\n".join(wrong)
