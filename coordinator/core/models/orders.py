"""Orders as the ERP reports them (SPEC §4 Order) and the replies that carry one."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, SerializerFunctionWrapHandler, field_validator, model_serializer, model_validator
from pydantic_core import PydanticCustomError

from coordinator.core.models.base import JSON_INTEGER, Body, Cents, Id, Millis, Name, Quantity, Version


class OrderItem(Body):
    """One order line."""

    line_id: Id
    sku: Id
    name: Name
    qty: Quantity
    unit_price_cents: Cents
    source: Literal["erp", "h5"]


#: A signed amount of money (an adjustment may lower the total): bounded as Cents is.
SignedCents = Annotated[int, Field(ge=-(10**12), le=10**12), JSON_INTEGER]


class Adjustment(Body):
    """A change to the sum of the lines: a discount (negative), a service charge, rounding (抹零).

    ``line_id``, when given, names the line it belongs to (a dish's own discount); otherwise it
    applies to the whole order. ``total_cents`` = sum of qty * unit_price_cents + sum of these.
    """

    kind: Literal["discount", "service_charge", "rounding"]
    amount_cents: SignedCents
    line_id: Id | None = None
    name: Name | None = None


class OrderIn(Body):
    """An order as the ERP pushes it (PUT /stores/{s}/orders/{o}); ``updated_at`` is ours."""

    order_id: Id
    table_id: Id
    version: Version
    status: Literal["open", "paid", "cancelled"]
    items: Annotated[list[OrderItem], Field(max_length=500)]
    total_cents: Cents
    #: Optional (SPEC §4 extension, docs/protocol.md): an order without it reconciles on its lines.
    adjustments: Annotated[list[Adjustment], Field(max_length=50)] = []

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

    @model_validator(mode="after")
    def _reconciles(self) -> "OrderIn":
        # A total the lines and adjustments do not explain cannot be split by lines (SPEC §10),
        # nor checked by anyone: refuse it at the edge with the numbers that disagree.
        lines = {item.line_id for item in self.items}
        unknown = sorted({a.line_id for a in self.adjustments if a.line_id is not None} - lines)
        if unknown:
            raise PydanticCustomError("unknown_line_id", "adjustment names line_id {line_ids}, not in items",
                                      {"line_ids": ", ".join(unknown)})
        expected = self.lines_cents() + sum(a.amount_cents for a in self.adjustments)
        if expected != self.total_cents:
            raise PydanticCustomError(
                "total_mismatch",
                "total_cents {total_cents} != sum of lines {lines_cents} + adjustments {adjustments_cents}",
                {"total_cents": self.total_cents, "lines_cents": self.lines_cents(),
                 "adjustments_cents": expected - self.lines_cents()},
            )
        return self

    @model_serializer(mode="wrap")
    def _without_empty_adjustments(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # An order without adjustments reads exactly as before they existed: old readers and
        # vendors comparing orders field by field see no change on the wire.
        data = handler(self)
        for name in ("adjustments", "paid_cents", "shares"):  # the additions, when empty
            if name in data and not data[name]:
                del data[name]
        return data

    def lines_cents(self) -> int:
        """The sum of qty * unit_price_cents over the lines."""
        return sum(item.qty * item.unit_price_cents for item in self.items)


class Share(BaseModel):
    """A split-bill share (SPEC §10): its kind, what it covers, and the amount it came to."""

    kind: Literal["lines", "parts", "amount", "rest"]
    line_ids: list[str] | None = None
    parts: int | None = None
    part: int | None = None
    amount_cents: int

    @model_serializer(mode="wrap")
    def _only_its_fields(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # A share shows the fields of its kind only (lines: line_ids; parts: parts and part).
        return {k: v for k, v in handler(self).items() if v is not None}


class PaidShare(Share):
    """A share paid: no payer identity (the table's diners see only that someone paid it)."""

    fence: int
    paid_at: Millis


class Order(OrderIn):
    """An order as the coordinator last heard it from the ERP, with what its paid shares came to."""

    updated_at: Millis
    #: Split bill: the sum of the paid shares and the shares themselves; absent until one is paid.
    paid_cents: int = 0
    shares: list[PaidShare] = []


class OrderResponse(BaseModel):
    """An order."""

    order: Order
