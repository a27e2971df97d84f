"""Order totals that reconcile (issue 13): total = sum of the lines + the explicit adjustments."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from coordinator.core.models import OrderIn
from tests.support.app import bearer, order_body

LINES = [
    {"line_id": "l1", "sku": "tea", "name": "茶", "qty": 2, "unit_price_cents": 900, "source": "erp"},
    {"line_id": "l2", "sku": "rice", "name": "米饭", "qty": 1, "unit_price_cents": 2001, "source": "erp"},
]


def with_total(total: int, adjustments: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """An order of LINES (38.01) with ``total`` and, when given, ``adjustments``."""
    body = order_body(items=LINES)
    body["total_cents"] = total
    if adjustments is not None:
        body["adjustments"] = adjustments
    return body


@pytest.mark.parametrize(
    ("total", "adjustments"),
    [
        pytest.param(3801, None, id="lines-alone"),
        pytest.param(3801, [], id="empty-adjustments"),
        pytest.param(3800, [{"kind": "rounding", "amount_cents": -1, "name": "抹零"}], id="rounding-moling"),
        pytest.param(3421, [{"kind": "discount", "amount_cents": -380}], id="order-discount"),
        pytest.param(3701, [{"kind": "discount", "amount_cents": -100, "line_id": "l1"}], id="line-discount"),
        pytest.param(4181, [{"kind": "service_charge", "amount_cents": 380}], id="service-charge"),
        pytest.param(4180, [{"kind": "service_charge", "amount_cents": 380},
                            {"kind": "rounding", "amount_cents": -1}], id="charge-then-rounding"),
    ],
)
def test_reconciling_totals_are_accepted(total, adjustments):
    """A total equal to the lines plus the adjustments validates."""
    assert OrderIn.model_validate(with_total(total, adjustments)).total_cents == total


@pytest.mark.parametrize(
    ("total", "adjustments", "error_type"),
    [
        pytest.param(3800, None, "total_mismatch", id="lines-alone-off-by-one"),
        pytest.param(3801, [{"kind": "rounding", "amount_cents": -1}], "total_mismatch", id="adjustment-unexplained"),
        pytest.param(3701, [{"kind": "discount", "amount_cents": -100, "line_id": "l9"}], "unknown_line_id",
                     id="adjustment-on-unknown-line"),
        pytest.param(3801, [{"kind": "tip", "amount_cents": 0}], "literal_error", id="unknown-kind"),
        pytest.param(3801, [{"kind": "discount", "amount_cents": "-1"}], "int_type", id="amount-as-string"),
    ],
)
def test_unreconciled_totals_are_refused(total, adjustments, error_type):
    """A total the lines and adjustments do not explain, or a malformed adjustment, is a validation error."""
    with pytest.raises(ValidationError) as raised:
        OrderIn.model_validate_json(__import__("json").dumps(with_total(total, adjustments)))
    assert error_type in {e["type"] for e in raised.value.errors()}


async def test_put_unreconciled_total_is_400_with_details(client, shop):
    """PUT of an order whose total does not reconcile is 400 VALIDATION_ERROR naming the numbers."""
    url = f"/api/v1/stores/{shop.store_id}/orders/o1"
    resp = await client.put(url, json=with_total(3900) | {"version": 2}, headers=bearer(shop.a))
    data = await resp.json()
    assert resp.status == 400 and data["error"]["code"] == "VALIDATION_ERROR"
    assert "3900" in str(data["error"]["details"]) and "3801" in str(data["error"]["details"])


async def test_adjustments_round_trip_and_old_orders_stay_as_they_were(client, shop):
    """Adjustments are stored and shown; an order without them reads back without the field (same wire)."""
    url = f"/api/v1/stores/{shop.store_id}/orders/o1"
    rounding = [{"kind": "rounding", "amount_cents": -1, "name": "抹零"}]
    resp = await client.put(url, json=with_total(3800, rounding) | {"version": 2}, headers=bearer(shop.a))
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["order"]["adjustments"] == [{"kind": "rounding", "amount_cents": -1,
                                                            "line_id": None, "name": "抹零"}]
    resp = await client.put(url, json=with_total(3801) | {"version": 3}, headers=bearer(shop.a))
    assert "adjustments" not in (await resp.json())["order"]
