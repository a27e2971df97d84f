"""Orders as the ERP reports them (SPEC §4 Order) and the replies that carry one."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, field_validator
from pydantic_core import PydanticCustomError

from coordinator.core.models.base import Body, Cents, Id, Millis, Name, Quantity, Version


class OrderItem(Body):
    """One order line."""

    line_id: Id
    sku: Id
    name: Name
    qty: Quantity
    unit_price_cents: Cents
    source: Literal["erp", "h5"]


class OrderIn(Body):
    """An order as the ERP pushes it (PUT /stores/{s}/orders/{o}); ``updated_at`` is ours."""

    order_id: Id
    table_id: Id
    version: Version
    status: Literal["open", "paid", "cancelled"]
    items: Annotated[list[OrderItem], Field(max_length=500)]
    total_cents: Cents

    @field_validator("items")
    @classmethod
    def _distinct_lines(cls, items: list[OrderItem]) -> list[OrderItem]:
        # Lines are addressed by line_id (the ERP's and the pages'): two with one id are ambiguous.
        seen: set[str] = set()
        repeated = [item.line_id for item in items if item.line_id in seen or seen.add(item.line_id)]
        if repeated:
            raise PydanticCustomError("duplicate_line_id", "line_id {line_ids} appears more than once",
                                      {"line_ids": ", ".join(sorted(set(repeated)))})
        return items


class Order(OrderIn):
    """An order as the coordinator last heard it from the ERP."""

    updated_at: Millis


class OrderResponse(BaseModel):
    """An order."""

    order: Order
