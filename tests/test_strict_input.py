"""Strict request bodies (issue 15, item 6): a bool is a JSON bool, an int a JSON integer, an
order's lines have distinct ``line_id``s, and an H5 checkout never forces.

Before this, pydantic's lax mode turned ``"force": "yes"`` and ``1`` into ``true`` (it broke a
cashier's payment lock), took ``"amount_cents": "1800"`` and ``"version": true`` (= 1), accepted
two lines with one ``line_id``, and answered ``POST /h5/checkout {"force": true}`` with 201.
"""

from __future__ import annotations

from typing import Any

import re

import pytest
from pydantic import BaseModel, TypeAdapter, ValidationError

from coordinator.core.models import Body, ItemLine, LockRequest, OrderIn, PaymentRequest
from coordinator.core.models.base import Name
from coordinator.realtime.erp_answers import ErpOrder
from tests.support.app import ADMIN_TOKEN, bearer, order_body, services

pytestmark = pytest.mark.security


def _order_path(shop) -> str:
    return f"/api/v1/stores/{shop.store_id}/orders/{shop.order_id}"


async def _send(client, method: str, url: str, token: str, body: Any) -> tuple[int, dict]:
    resp = await client.request(method, url, json=body, headers=bearer(token))
    return resp.status, await resp.json() if resp.content_type == "application/json" else {}


def _assert_invalid(status: int, data: dict, field: str) -> None:
    assert status == 400, data
    assert data["error"]["code"] == "VALIDATION_ERROR"
    assert any(d["loc"][-1] == field or field in d["loc"] for d in data["error"]["details"]), data


async def _h5_session(client, shop) -> str:
    resp = await client.post("/api/v1/h5/sessions", json={"qr_token": shop.qr})
    assert resp.status == 201
    return (await resp.json())["session_token"]


def _all_bodies() -> list[type[BaseModel]]:
    found, todo = [], [Body]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


def test_every_request_body_is_strict_and_forbids_unknown_fields():
    """Each model a client's JSON is parsed into is strict and closed (an ERP's RPC answer may carry vendor fields)."""
    bodies = _all_bodies()
    assert len(bodies) > 10
    for model in bodies:
        assert model.model_config.get("strict") is True, model
        assert model.model_config.get("extra") == ("ignore" if model is ErpOrder else "forbid"), model


@pytest.mark.parametrize("raw", ['"yes"', "1", '"true"', "0"])
def test_force_takes_only_a_json_bool(raw):
    """``force`` of a lock request is a JSON bool; a string or a number is refused."""
    with pytest.raises(ValidationError):
        LockRequest.model_validate_json('{"kind": "payment", "force": %s}' % raw)


@pytest.mark.parametrize("field,raw", [("amount_cents", '"1800"'), ("amount_cents", "true"), ("amount_cents", "1800.5"),
                                       ("version", "true"), ("version", '"1"')])
def test_payment_ints_take_only_json_integers(field, raw):
    """amount_cents and version are JSON integers: no strings, no bools, no fractions."""
    body = {"token": '"t"', "amount_cents": "1800", "version": "1", "payment_ref": '"p"', field: raw}
    with pytest.raises(ValidationError):
        PaymentRequest.model_validate_json("{" + ", ".join(f'"{k}": {v}' for k, v in body.items()) + "}")


def test_a_whole_number_written_with_a_fraction_is_an_integer():
    """1800.0 is the integer 1800 (JSON Schema's "integer"; a JavaScript page sends it so)."""
    payment = PaymentRequest.model_validate_json('{"token": "t", "amount_cents": 1800.0, "version": 2.0, "payment_ref": "p"}')
    assert (payment.amount_cents, payment.version) == (1800, 2)
    assert type(payment.amount_cents) is int
    assert ItemLine.model_validate_json('{"sku": "tea", "qty": 3.0}').qty == 3


@pytest.mark.parametrize("force", ["yes", 1, "true"])
async def test_erp_lock_request_with_a_non_bool_force_is_400_and_breaks_nothing(client, shop, force):
    """A cashier's payment lock stays when another terminal sends ``force: "yes"`` or ``1``."""
    locks = _order_path(shop) + "/locks"
    status, grant = await _send(client, "POST", locks, shop.a, {"kind": "payment"})
    assert status == 201
    status, data = await _send(client, "POST", locks, shop.b, {"kind": "payment", "force": force})
    _assert_invalid(status, data, "force")
    status, now = await _send(client, "GET", _order_path(shop), shop.a, None)
    assert [(l["kind"], l["fence"]) for l in now["locks"]] == [("payment", grant["lock"]["fence"])]


@pytest.mark.parametrize("value", [True, "1"])
async def test_erp_expected_version_takes_only_an_integer(client, shop, value):
    """``expected_version: true`` is not version 1."""
    status, data = await _send(client, "POST", _order_path(shop) + "/locks", shop.a,
                               {"kind": "payment", "expected_version": value})
    _assert_invalid(status, data, "expected_version")


@pytest.mark.parametrize("field,value", [("amount_cents", "3800"), ("version", True)])
async def test_erp_payments_take_only_integers_and_h5_has_no_completion(client, shop, field, value):
    """``"amount_cents": "3800"`` or ``"version": true`` never reaches the ERP payment check (400, not 409);
    an H5 session has no completion endpoint at all (SPEC §9: 404)."""
    body = {"token": "whatever", "amount_cents": 3800, "version": 1, "payment_ref": "p-1", field: value}
    status, data = await _send(client, "POST", _order_path(shop) + "/payments", shop.a, body)
    _assert_invalid(status, data, field)
    session = await _h5_session(client, shop)
    status, data = await _send(client, "POST", "/api/v1/h5/payments", session, body)
    assert status == 404, data


async def test_an_order_with_two_lines_of_one_line_id_is_400_and_not_stored(client, shop):
    """Duplicate line_ids are refused with details naming them; the stored order is unchanged."""
    line = {"line_id": "l1", "sku": "tea", "name": "茶", "qty": 1, "unit_price_cents": 900, "source": "erp"}
    body = order_body(version=2, items=[line, {**line, "sku": "rice"}])
    status, data = await _send(client, "PUT", _order_path(shop), shop.a, body)
    _assert_invalid(status, data, "items")
    assert data["error"]["details"][0]["type"] == "duplicate_line_id" and "l1" in data["error"]["details"][0]["msg"]
    order, _ = await services(client).engine.get_order(shop.store_id, shop.order_id)
    assert order["version"] == 1


def test_distinct_line_ids_pass():
    """Lines with distinct ids are an order like any other."""
    assert len(OrderIn.model_validate(order_body()).items) == 2


@pytest.mark.parametrize("mutate", [{"qty": "2"}, {"qty": True}, {"unit_price_cents": "900"}])
async def test_order_lines_take_only_integers(client, shop, mutate):
    """An ERP push with a quantity or price as a string or bool is 400."""
    items = [{"line_id": "l1", "sku": "tea", "name": "茶", "qty": 2, "unit_price_cents": 900, "source": "erp", **mutate}]
    status, data = await _send(client, "PUT", _order_path(shop), shop.a, order_body(version=2, items=[]) | {"items": items})
    _assert_invalid(status, data, next(iter(mutate)))


async def test_h5_checkout_with_force_is_403_and_takes_no_lock(client, shop):
    """SPEC §2: ``force: true`` from H5 is 403 FORBIDDEN (it was 201)."""
    session = await _h5_session(client, shop)
    status, data = await _send(client, "POST", "/api/v1/h5/checkout", session, {"force": True})
    assert status == 403 and data["error"]["code"] == "FORBIDDEN"
    _, locks = await services(client).engine.get_order(shop.store_id, shop.order_id)
    assert locks == []


async def test_h5_checkout_with_a_non_bool_force_or_an_unknown_field_is_400(client, shop):
    """The checkout body, when there is one, is strict and closed like every other."""
    session = await _h5_session(client, shop)
    for body, field in (({"force": "yes"}, "force"), ({"expected_version": 1}, "expected_version")):
        status, data = await _send(client, "POST", "/api/v1/h5/checkout", session, body)
        _assert_invalid(status, data, field)


@pytest.mark.parametrize("changes,field", [({"strong_link_enabled": 1}, "strong_link_enabled"),
                                           ({"strong_link_enabled": "yes"}, "strong_link_enabled"),
                                           ({"h5_payment_lock_seconds": "20"}, "h5_payment_lock_seconds")])
async def test_admin_config_patch_takes_only_json_types(client, shop, changes, field):
    """A store admin's ``1`` for true or ``"20"`` for 20 is refused, naming the key; nothing changes."""
    url = f"/api/v1/admin/stores/{shop.store_id}/config"
    status, data = await _send(client, "PATCH", url, ADMIN_TOKEN, changes)
    _assert_invalid(status, data, field)
    assert field in data["error"]["message_en"]
    status, config = await _send(client, "GET", url, ADMIN_TOKEN, None)
    assert config["strong_link_enabled"] is True and config["h5_payment_lock_seconds"] == 15


async def test_terminal_master_flag_takes_only_a_json_bool(client, shop):
    """``master: "yes"`` does not register a master terminal."""
    url = f"/api/v1/admin/stores/{shop.store_id}/terminals"
    status, data = await _send(client, "POST", url, ADMIN_TOKEN, {"name": "后厨", "master": "yes"})
    _assert_invalid(status, data, "master")


# Every character some regex engine or str.strip calls blank: ECMA's \s (what a client and the schema
# fuzzer read from the OpenAPI pattern), Rust's (pydantic) and Python's isspace() disagree on U+0085,
# U+FEFF and U+001C-U+001F. A schema-valid name was once refused ("\x85", found by schemathesis in CI).
_BLANKS = sorted({chr(c) for c in range(0x3100) if chr(c).isspace()} | {"\ufeff"})


@pytest.mark.parametrize("blank", _BLANKS, ids=lambda c: f"U+{ord(c):04X}")
def test_a_blank_name_is_refused_by_the_schema_pattern_and_by_the_model(blank):
    pattern = TypeAdapter(Name).json_schema()["pattern"]
    assert re.search(pattern, blank * 3) is None  # the published pattern says "blank" too
    with pytest.raises(ValidationError):
        TypeAdapter(Name).validate_python(blank * 3)


@pytest.mark.parametrize("name", ["宫保鸡丁", " a ", "\u0085x", "x\ufeff"])
def test_a_name_the_pattern_accepts_is_accepted_and_never_strips_to_empty(name):
    assert re.search(TypeAdapter(Name).json_schema()["pattern"], name)
    assert TypeAdapter(Name).validate_python(name)
