"""What the admin API reads and writes (SPEC §5 admin): stores, terminals, tables, audit, reconciliation."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, create_model, model_validator
from pydantic_core import PydanticCustomError

from coordinator.core.models.base import Body, Id, Millis, Name


class StoreIn(Body):
    """PUT /admin/stores/{store_id}."""

    name: Name


class Store(BaseModel):
    """A store."""

    store_id: str
    name: str
    created_at: Millis


class StoreList(BaseModel):
    """GET /admin/stores."""

    stores: list[Store]


class TerminalIn(Body):
    """POST /admin/stores/{s}/terminals."""

    name: Name
    master: bool = False


class Terminal(BaseModel):
    """A registered ERP terminal."""

    terminal_id: str
    name: str
    master: bool
    online: bool = False
    created_at: Millis


class TerminalCreated(BaseModel):
    """201 of terminal registration: the only time the token is shown."""

    terminal_id: str
    name: str
    master: bool
    token: str


class TerminalList(BaseModel):
    """GET /admin/stores/{s}/terminals."""

    terminals: list[Terminal]


class TableIn(Body):
    """PUT /admin/stores/{s}/tables/{t}."""

    name: Name


class Table(BaseModel):
    """A table, with the link its QR code encodes."""

    table_id: str
    name: str
    qr_url: str


class TableList(BaseModel):
    """GET /admin/stores/{s}/tables."""

    tables: list[Table]


class AuditEntry(BaseModel):
    """One audit log entry."""

    id: str
    ts: Millis
    name: str
    actor: dict[str, Any] | None
    order_id: str | None
    table_id: str | None
    data: dict[str, Any]


class AuditPage(BaseModel):
    """GET .../audit: entries oldest first; ``next`` is the ``after`` of the next page."""

    entries: list[AuditEntry]
    next: str | None


class ReconciliationCase(BaseModel):
    """An order that needs a human look, with why and its audit trail."""

    order_id: str
    table_id: str | None
    reasons: list[Literal["forced_during_payment", "payment_rejected", "amount_mismatch", "version_mismatch",
                          "share_refund_due", "refund_needed", "reopened"]]
    trail: list[AuditEntry]


class Reconciliation(BaseModel):
    """GET .../reconciliation."""

    cases: list[ReconciliationCase]


# --- query strings: every value arrives as text, so these models convert (they are not Body) ---

#: A stream id as the audit pages hand it out (``next``): "<ms>-<seq>".
StreamId = Annotated[str, StringConstraints(pattern=r"^\d{1,15}-\d{1,18}$")]
#: A time bound in Unix ms (up to year 10889, so bounds always make valid stream ids).
TimeBound = Annotated[int, Field(ge=0, le=2**48)]


class _Window(BaseModel):
    """A ``from``/``to`` time window in Unix ms, both ends inclusive; unknown parameters are a mistake."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="after")
    def _ordered(self) -> "_Window":
        start, end = getattr(self, "from"), getattr(self, "to")
        if start is not None and end is not None and start > end:
            raise PydanticCustomError("window_order", "from must not be later than to")
        return self


class _AuditFilters(_Window):
    """GET .../audit filters besides the window."""

    after: StreamId | None = None
    limit: Annotated[int, Field(ge=1, le=500)] = 100
    order_id: Id | None = None
    kind: Literal["order", "presettle", "payment"] | None = None  # inline enum: no $ref in the query schema


# ``from`` is a Python keyword, so the window fields are declared by name here.
_WINDOW_FIELDS: dict[str, Any] = {"from": (TimeBound | None, None), "to": (TimeBound | None, None)}
#: GET .../audit?after=&limit=&order_id=&kind=&from=&to=
AuditQuery = create_model("AuditQuery", __base__=_AuditFilters, **_WINDOW_FIELDS)
#: GET .../reconciliation?from=&to=
ReconciliationQuery = create_model("ReconciliationQuery", __base__=_Window, **_WINDOW_FIELDS)
