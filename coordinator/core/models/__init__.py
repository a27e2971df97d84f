"""The data shapes of SPEC §4–§6 as pydantic models: stored data, request and response bodies.

    base      field types (Id, Name, Cents, Version…) and ``Body``, the strict request-body base
    orders    Order and the replies that carry one
    locks     Lock, holders, lock request and reply bodies
    config    StoreConfig and the admin's patch derived from it
    admin     stores, terminals, tables, audit and reconciliation (and their query strings)
    h5        the diner's page: session, table view, menu, dishes, checkout
    errors    the SPEC error body

The same models validate requests and generate the OpenAPI document (``api/openapi.py``).
Websocket messages live in ``realtime/messages.py``. Import from here: the modules are a layout.
"""

from coordinator.core.models.admin import (
    AuditEntry,
    AuditPage,
    AuditQuery,
    Reconciliation,
    ReconciliationCase,
    ReconciliationQuery,
    Store,
    StoreIn,
    StoreList,
    StreamId,
    Table,
    TableIn,
    TableList,
    Terminal,
    TerminalCreated,
    TerminalIn,
    TerminalList,
    TimeBound,
)
from coordinator.core.models.base import JSON_INTEGER, Body, Cents, Id, Millis, Name, Quantity, Token, Version
from coordinator.core.models.config import StoreConfig, StoreConfigChange, StoreConfigPatch, config_rule
from coordinator.core.models.errors import ErrorBody, ErrorDetail
from coordinator.core.models.h5 import (
    Checkout,
    CheckoutRequest,
    H5Config,
    H5Table,
    H5TableView,
    ItemLine,
    ItemsRequest,
    Menu,
    MenuItem,
    SessionCreated,
    SessionRequest,
    StoreRef,
    TableRef,
)
from coordinator.core.models.locks import (
    CheckRequest,
    CheckResult,
    ErpHolder,
    H5Holder,
    Lock,
    LockGrant,
    LockList,
    LockRequest,
    LockResponse,
    LockView,
    LockViewList,
    OrderWithLocks,
    OrderWithLockViews,
    PaymentRequest,
    Released,
    TokenBody,
    ViewerHolder,
)
from coordinator.core.models.orders import Adjustment, Order, OrderIn, OrderItem, OrderResponse, PaidShare, Share
from coordinator.core.models.shares import PutOrderQuery, ShareAmount, ShareClaimRequest, ShareIn, ShareLines, ShareParts, ShareRest

__all__ = [
    "AuditEntry", "AuditPage", "AuditQuery", "Body", "Cents", "CheckRequest", "CheckResult", "Checkout",
    "CheckoutRequest", "ErpHolder", "ErrorBody", "ErrorDetail", "H5Config", "H5Holder", "H5Table",
    "H5TableView", "Id", "JSON_INTEGER", "ItemLine", "ItemsRequest", "Lock", "LockGrant", "LockList", "LockRequest",
    "Adjustment", "LockResponse", "LockView", "LockViewList", "Menu", "MenuItem", "Millis", "Name", "Order", "OrderIn",
    "OrderItem", "OrderResponse", "OrderWithLockViews", "OrderWithLocks", "PaymentRequest", "Quantity",
    "Reconciliation", "ReconciliationCase", "ReconciliationQuery", "Released", "SessionCreated",
    "SessionRequest", "Store", "StoreConfig", "StoreConfigChange", "StoreConfigPatch", "StoreIn", "StoreList",
    "StoreRef", "StreamId", "Table", "TableIn", "TableList", "TableRef", "Terminal", "TerminalCreated",
    "TerminalIn", "TerminalList", "TimeBound", "Token", "Version", "ViewerHolder", "config_rule",
    "PaidShare", "PutOrderQuery", "Share", "ShareAmount", "ShareClaimRequest", "ShareIn", "ShareLines",
    "ShareParts", "ShareRest",
]
