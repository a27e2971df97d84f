"""The data shapes of SPEC §4–§6 as pydantic models: stored data, request and response bodies.

The same models validate requests and generate the OpenAPI document (``api/openapi.py``).
Websocket messages live in ``messages.py``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from coordinator.core.rules import Action, Kind

Id = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
#: A display name: 1..100 characters with at least one that is not blank, stored stripped. The bounds
#: apply before stripping so that the JSON schema (minLength, maxLength, pattern) says exactly what passes.
Name = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=r"\S"), AfterValidator(str.strip)]
Token = Annotated[str, StringConstraints(min_length=1, max_length=512)]
Cents = Annotated[int, Field(ge=0, le=10**12)]
#: An order version: Lua numbers are doubles, so versions stay within 2**53 to compare exactly.
Version = Annotated[int, Field(ge=1, le=2**53)]
Millis = int


class Body(BaseModel):
    """A request body: unknown fields are a client mistake."""

    model_config = ConfigDict(extra="forbid")


# --- orders -------------------------------------------------------------------------------


class OrderItem(BaseModel):
    """One order line."""

    model_config = ConfigDict(extra="forbid")
    line_id: Id
    sku: Id
    name: Name
    qty: Annotated[int, Field(ge=1, le=999)]
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


class Order(OrderIn):
    """An order as the coordinator last heard it from the ERP."""

    updated_at: Millis


# --- locks --------------------------------------------------------------------------------


class ErpHolder(BaseModel):
    """An ERP terminal holding a lock, as ERP viewers and admins see it."""

    role: Literal["erp"] = "erp"
    terminal_id: str
    name: str
    online: bool = False


class H5Holder(BaseModel):
    """An H5 session holding a lock, as ERP viewers and admins see it."""

    role: Literal["h5"] = "h5"
    session_id: str


class ViewerHolder(BaseModel):
    """A holder as an H5 viewer sees it: no ids, only whether it is the viewer."""

    role: Literal["erp", "h5"]
    is_me: bool


class Lock(BaseModel):
    """A lock; ``token`` appears only in the holder's own responses."""

    kind: Kind
    order_id: str
    table_id: str
    holder: ErpHolder | H5Holder | ViewerHolder
    fence: int
    version: int | None
    acquired_at: Millis
    expires_at: Millis
    token: str | None = None
    completing: bool = False
    #: H5 payment locks (SPEC §9): claimed (checkout) → in_flight (provider order open) → completing.
    phase: Literal["claimed", "in_flight", "completing"] | None = None
    out_trade_no: str | None = None
    provider: str | None = None


class LockRequest(Body):
    """POST .../locks."""

    kind: Kind
    force: bool = False
    expected_version: Version | None = None
    #: Force although the provider could not say whether the diner's in-flight payment went through.
    force_unverified: bool = False


class TokenBody(Body):
    """A body that presents a lock token (renew, release, checkout/cancel)."""

    token: Token


class CheckRequest(Body):
    """POST .../check."""

    action: Action


class PaymentRequest(Body):
    """POST .../payments and /h5/payments."""

    token: Token
    amount_cents: Cents
    version: Version
    payment_ref: Annotated[str, StringConstraints(min_length=1, max_length=128)]


class LockGrant(BaseModel):
    """201 of a lock request; ``enforced`` is false in legacy mode (nothing was stored)."""

    lock: Lock
    enforced: bool = True


class LockResponse(BaseModel):
    """200 of renew."""

    lock: Lock


class Released(BaseModel):
    """200 of release."""

    released: bool


class CheckResult(BaseModel):
    """200 of check."""

    allowed: bool
    code: str | None
    message: str | None
    message_en: str | None
    force_allowed: bool


class OrderResponse(BaseModel):
    """An order."""

    order: Order


class OrderWithLocks(BaseModel):
    """GET /stores/{s}/orders/{o}."""

    order: Order
    locks: list[Lock]


class LockList(BaseModel):
    """GET /stores/{s}/locks and the admin lock board."""

    locks: list[Lock]


# --- stores, configuration, terminals, tables --------------------------------------------


class StoreConfig(BaseModel):
    """Per-store configuration (SPEC §6), with the admin-settable ranges."""

    model_config = ConfigDict(extra="forbid")
    strong_link_enabled: bool = True
    h5_payment_lock_seconds: Annotated[int, Field(ge=1, le=300)] = 15
    erp_payment_lock_seconds: Annotated[int, Field(ge=5, le=3600)] = 180
    order_lock_seconds: Annotated[int, Field(ge=5, le=3600)] = 300
    presettle_lock_seconds: Annotated[int, Field(ge=30, le=86400)] = 1800
    erp_disconnect_grace_seconds: Annotated[int, Field(ge=0, le=600)] = 30
    erp_rpc_timeout_ms: Annotated[int, Field(ge=100, le=30000)] = 3000
    #: Payments (SPEC §9): the provider order's life, and whether surplus money is refunded by itself.
    h5_payment_window_seconds: Annotated[int, Field(ge=60, le=900)] = 180
    auto_refund_surplus: bool = True

    def lock_seconds(self, kind: Kind, role: str) -> int:
        """The duration of a new lock of ``kind`` taken by ``role``."""
        if kind is Kind.PAYMENT:
            return self.h5_payment_lock_seconds if role == "h5" else self.erp_payment_lock_seconds
        return self.order_lock_seconds if kind is Kind.ORDER else self.presettle_lock_seconds


class StoreConfigPatch(Body):
    """PATCH .../config: any subset of the configuration."""

    strong_link_enabled: bool | None = None
    h5_payment_lock_seconds: Annotated[int, Field(ge=1, le=300)] | None = None
    erp_payment_lock_seconds: Annotated[int, Field(ge=5, le=3600)] | None = None
    order_lock_seconds: Annotated[int, Field(ge=5, le=3600)] | None = None
    presettle_lock_seconds: Annotated[int, Field(ge=30, le=86400)] | None = None
    erp_disconnect_grace_seconds: Annotated[int, Field(ge=0, le=600)] | None = None
    erp_rpc_timeout_ms: Annotated[int, Field(ge=100, le=30000)] | None = None
    h5_payment_window_seconds: Annotated[int, Field(ge=60, le=900)] | None = None
    auto_refund_surplus: bool | None = None


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
    reasons: list[Literal["forced_during_payment", "payment_rejected", "amount_mismatch", "version_mismatch"]]
    trail: list[AuditEntry]


class Reconciliation(BaseModel):
    """GET .../reconciliation."""

    cases: list[ReconciliationCase]


# --- H5 -----------------------------------------------------------------------------------


class SessionRequest(Body):
    """POST /h5/sessions."""

    qr_token: Annotated[str, StringConstraints(min_length=1, max_length=512)]


class SessionCreated(BaseModel):
    """201 of POST /h5/sessions."""

    session_token: str
    store_id: str
    table_id: str
    expires_at: Millis


class H5Config(BaseModel):
    """What the H5 page needs of the store configuration."""

    strong_link_enabled: bool
    h5_payment_lock_seconds: int


class StoreRef(BaseModel):
    """A store as the H5 page sees it."""

    store_id: str
    name: str


class TableRef(BaseModel):
    """A table as the H5 page sees it."""

    table_id: str
    name: str


class H5Table(BaseModel):
    """GET /h5/table: everything the diner's page shows, in the H5 viewer form."""

    store: StoreRef
    table: TableRef
    order: Order | None
    locks: list[Lock]
    config: H5Config
    seq: int


class MenuItem(BaseModel):
    """A dish on the menu."""

    sku: Id
    name: Name
    unit_price_cents: Cents


class Menu(BaseModel):
    """GET /h5/menu."""

    items: list[MenuItem]


class ItemLine(Body):
    """A dish the diner adds."""

    sku: Id
    qty: Annotated[int, Field(ge=1, le=999)]


class ItemsRequest(Body):
    """POST /h5/items."""

    items: Annotated[list[ItemLine], Field(min_length=1, max_length=50)]
    request_id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]


class Checkout(BaseModel):
    """201 of POST /h5/checkout."""

    lock: Lock
    order: Order
    enforced: bool = True


# --- errors -------------------------------------------------------------------------------


class ErrorDetail(BaseModel):
    """The SPEC error object."""

    code: str
    message: str
    message_en: str
    force_allowed: bool
    lock: Lock | None
    order: Order | None
    details: list[Any] | None


class ErrorBody(BaseModel):
    """Every 4xx/5xx body."""

    error: ErrorDetail


# --- admin: clear config errors, audit and reconciliation queries --------------------------
# (imports kept with the section they serve, which was appended to this module)

import json  # noqa: E402

from pydantic import (  # noqa: E402
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError  # noqa: E402


def config_rule(field: str) -> str:
    """What a store admin must enter for a configuration key, e.g. "… must be between 1 and 300 seconds"."""
    if StoreConfig.model_fields[field].annotation is bool:
        return f"{field} must be true or false"
    bounds = {type(m).__name__: m for m in StoreConfig.model_fields[field].metadata}
    unit = "ms" if field.endswith("_ms") else "seconds"
    return f"{field} must be between {bounds['Ge'].ge} and {bounds['Le'].le} {unit}"


class StoreConfigChange(StoreConfigPatch):
    """PATCH .../config: any subset of the configuration; a bad value names its key and range."""

    @field_validator("*", mode="wrap")
    @classmethod
    def _explain(cls, value: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo) -> Any:
        try:
            return handler(value)
        except ValidationError:
            got = json.dumps(value if isinstance(value, (bool, int, float)) else str(value)[:40], ensure_ascii=False)
            raise PydanticCustomError(
                "config_out_of_range", "{rule} (got {got})", {"rule": config_rule(info.field_name), "got": got}
            ) from None


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


# --- lock views for everyone but the holder (appended: the token field is absent, not null) ---

from pydantic.json_schema import SkipJsonSchema  # noqa: E402


class LockView(Lock):
    """A lock as anyone but its holder sees it: no ``token`` key at all (SPEC §4, invariant 6)."""

    token: SkipJsonSchema[str | None] = Field(default=None, exclude=True)


class OrderWithLockViews(OrderWithLocks):
    """GET /stores/{s}/orders/{o}: the order and its live locks, without tokens."""

    locks: list[LockView]


class LockViewList(LockList):
    """GET /stores/{s}/locks: the store's live locks, without tokens."""

    locks: list[LockView]


class H5TableView(H5Table):
    """GET /h5/table, with the locks in the H5 viewer form and no token key."""

    locks: list[LockView]
