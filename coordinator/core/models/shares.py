"""Split-bill request bodies (SPEC §10): the share a payer asks for, and the ERP's share endpoints."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from coordinator.core.models.base import JSON_INTEGER, Body, Id, Version
from coordinator.core.shares import MAX_PARTS, ShareKind, ShareSpec


class ShareLines(Body):
    """A share of the given lines (each line in one share only)."""

    lines: Annotated[list[Id], Field(min_length=1, max_length=500)]

    def spec(self) -> ShareSpec:
        """The share as the rules take it."""
        return ShareSpec(ShareKind.LINES, line_ids=tuple(self.lines))


class ShareParts(Body):
    """Part ``part`` (1-based) of ``parts`` equal parts ("AA N 人"); the last part takes the rounding."""

    parts: Annotated[int, Field(ge=2, le=MAX_PARTS), JSON_INTEGER]
    part: Annotated[int, Field(ge=1, le=MAX_PARTS), JSON_INTEGER]

    @model_validator(mode="after")
    def _part_within(self) -> "ShareParts":
        if self.part > self.parts:
            raise PydanticCustomError("share_part", "part must be between 1 and parts")
        return self

    def spec(self) -> ShareSpec:
        """The share as the rules take it."""
        return ShareSpec(ShareKind.PARTS, parts=self.parts, part=self.part)


class ShareAmount(Body):
    """A share of a given amount."""

    amount_cents: Annotated[int, Field(ge=1, le=10**12), JSON_INTEGER]

    def spec(self) -> ShareSpec:
        """The share as the rules take it."""
        return ShareSpec(ShareKind.AMOUNT, amount_cents=self.amount_cents)


class ShareRest(Body):
    """Whatever remains due."""

    rest: Literal[True]

    def spec(self) -> ShareSpec:
        """The share as the rules take it."""
        return ShareSpec(ShareKind.REST)


#: Exactly one of the four forms (each refuses the others' fields).
ShareIn = ShareLines | ShareParts | ShareAmount | ShareRest


class ShareClaimRequest(Body):
    """POST /stores/{s}/orders/{o}/shares: an ERP terminal takes a share (e.g. the rest) under its own lock."""

    share: ShareIn
    expected_version: Version | None = None


class PutOrderQuery(BaseModel):
    """PUT /stores/{s}/orders/{o}?force=true: store a change of a partly paid order anyway (opens a refund task)."""

    model_config = ConfigDict(extra="forbid")

    force: bool = False
