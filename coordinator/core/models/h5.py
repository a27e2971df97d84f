"""What the diner's H5 page sends and reads (SPEC §5 H5 session), in the H5 viewer form."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints

from coordinator.core.models.base import Body, Cents, Id, Millis, Name, Quantity
from coordinator.core.models.locks import Lock, LockView
from coordinator.core.models.orders import Order
from coordinator.core.models.shares import ShareIn


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


class H5TableView(H5Table):
    """GET /h5/table, with the locks in the H5 viewer form and no token key."""

    locks: list[LockView]


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
    qty: Quantity


class ItemsRequest(Body):
    """POST /h5/items."""

    items: Annotated[list[ItemLine], Field(min_length=1, max_length=50)]
    request_id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]


class CheckoutRequest(Body):
    """POST /h5/checkout (the body may be absent): ``force: true`` is refused, H5 never forces (SPEC §2)."""

    force: bool = False
    #: Split bill (SPEC §10): pay only this share of the order under its own payment lock.
    share: ShareIn | None = None


class Checkout(BaseModel):
    """201 of POST /h5/checkout."""

    lock: Lock
    order: Order
    enforced: bool = True
