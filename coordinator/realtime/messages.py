"""Every websocket message of SPEC §7, both ways, as pydantic models discriminated on ``type``.

    server → client                          client → server
    hello     {role, client_id, seq}         ping        {id?}
    snapshot  {seq, orders, locks}           rpc_result  {id, result}
    event     {seq, ts, name, store_id,      rpc_error   {id, error: {code, message}}
               table_id, order_id, data}
    rpc       {id, method, params}           ERP commands (docs/protocol.md A15), each
    pong      {id?}                            {id, store_id?, order_id, ...the HTTP body}:
    error     {id?, error: SPEC Error}         lock.acquire  lock.renew  lock.release
    result    {id, success: true, result}      order.check   payment.complete
              {id, success: false,
               error: SPEC Error + status}

The adapters are built once at import. Incoming frames are parsed straight from the raw text
with ``CLIENT_MESSAGE.validate_json``. Outgoing messages come from the pure builders below; an
event is serialised once per audience by the hub (``event_text``), never once per socket.

Close codes the server uses (``CloseCode``) are part of the protocol too.
"""

from __future__ import annotations

import json
from enum import IntEnum
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError

from coordinator.core.errors import MESSAGES, TablelockError
from coordinator.core.models import (
    CheckRequest,
    ErrorDetail,
    Lock,
    LockRequest,
    Order,
    PaymentRequest,
    TokenBody,
)
from coordinator.core.models.base import Body, Id
from coordinator.core.rules import Kind

#: Largest text frame the server reads as a message; a larger one (up to ``MAX_FRAME``) is
#: answered with a VALIDATION_ERROR, beyond ``MAX_FRAME`` aiohttp closes with 1009.
MAX_MESSAGE_BYTES = 64 * 1024
MAX_FRAME = 4 * MAX_MESSAGE_BYTES

EventName = Literal[
    "lock.acquired", "lock.renewed", "lock.released", "lock.expired", "lock.forced",
    "order.updated", "order.paid", "payment.rejected", "config.updated", "terminal.status",
    # provider payments (SPEC §9)
    "payment.started", "payment.failed", "payment.surplus", "payment.refund_updated", "order.addon_refused",
    # SPEC §11: service requests and table operations (docs/protocol.md A10-A12)
    "service.requested", "service.taken", "order.moved", "order.merged", "order.reopened",
    "refund.needed",
    # SPEC §10: split bill (docs/protocol.md A13)
    "share.paid", "share.refund_due",
]
MessageId = Union[int, Annotated[str, StringConstraints(min_length=1, max_length=128)]]


class CloseCode(IntEnum):
    """Websocket close codes the coordinator sends, and what the client should do."""

    #: The process is shutting down: reconnect (with ``since``), another process will answer.
    GOING_AWAY = 1001
    #: Flood (too many messages per second or too many invalid frames), or a socket cap full (too
    #: many sockets for this H5 session, terminal or address): fix the client / close another socket.
    POLICY_VIOLATION = 1008
    #: Unexpected server error: reconnect with ``since``.
    INTERNAL_ERROR = 1011
    #: Slow consumer: its send queue filled up. Reconnect with ``since``; it resumes losslessly.
    TRY_AGAIN_LATER = 1013
    #: Bad, expired or revoked token (SPEC §7): do not reconnect with the same token.
    UNAUTHENTICATED = 4401
    #: A valid token that has no websocket scope (the admin token).
    FORBIDDEN = 4403
    #: Silent for ``ws_idle_timeout_seconds`` (no frame, not even a pong).
    IDLE_TIMEOUT = 4408
    #: Live events were lost between Redis and this process and cannot be filled from the
    #: stream: reconnect with ``since`` to get a snapshot.
    RESYNC = 4409
    #: Too many connects from this address in the last minute (``ws_connect_rate_per_minute``):
    #: reconnect later, with backoff.
    RATE_LIMITED = 4429


# --- server → client ------------------------------------------------------------------------


class Hello(BaseModel):
    """First message on every socket: who you are and the store's latest seq."""

    type: Literal["hello"] = "hello"
    role: Literal["erp", "h5"]
    #: The terminal id of an ERP terminal, the session id of an H5 session (its own).
    client_id: str
    seq: int
    #: What follows hello (issue 17): one ``snapshot``, or ``replay_count`` replayed ``event``
    #: messages (none when nothing was missed); live events come after either.
    resume: Literal["snapshot", "replay"] = "snapshot"
    replay_count: int = 0


class Snapshot(BaseModel):
    """The client's scope as of ``seq``: its open orders and live locks (viewer form)."""

    type: Literal["snapshot"] = "snapshot"
    seq: int
    orders: list[Order]
    locks: list[Lock]


class Event(BaseModel):
    """A store event (SPEC §7) in the viewer's form."""

    type: Literal["event"] = "event"
    seq: int
    ts: int
    name: EventName
    store_id: str
    table_id: str | None
    order_id: str | None
    data: dict[str, Any]


class RpcRequest(BaseModel):
    """An ERP RPC sent to the store's master terminal (rpc.py builds these)."""

    type: Literal["rpc"] = "rpc"
    id: MessageId
    method: str
    params: dict[str, Any]


class Pong(BaseModel):
    """The answer to a client ``ping``."""

    type: Literal["pong"] = "pong"
    id: MessageId | None = None


class ErrorMessage(BaseModel):
    """A client message the server could not accept; the socket stays open."""

    type: Literal["error"] = "error"
    id: MessageId | None = None
    error: ErrorDetail


class ResultError(ErrorDetail):
    """A refused command: the SPEC error body the HTTP route gives, and that route's status."""

    status: int


class Result(BaseModel):
    """The answer to one ERP command: ``result`` (the HTTP body) when it succeeded, else ``error``."""

    type: Literal["result"] = "result"
    id: MessageId
    success: bool
    result: dict[str, Any] | None = None
    error: ResultError | None = None


ServerMessage = Annotated[
    Union[Hello, Snapshot, Event, RpcRequest, Pong, ErrorMessage, Result], Field(discriminator="type")
]


# --- client → server ------------------------------------------------------------------------


class ClientBase(BaseModel):
    """Unknown extra fields are ignored, so newer clients keep working."""

    model_config = ConfigDict(extra="ignore")


class Ping(ClientBase):
    """Application-level ping (the protocol ping is separate); answered with ``pong``."""

    type: Literal["ping"]
    id: MessageId | None = None


class RpcResult(ClientBase):
    """An ERP terminal's answer to an ``rpc``."""

    type: Literal["rpc_result"]
    id: MessageId
    result: Any = None


class RpcErrorBody(ClientBase):
    """Why the ERP could not answer an ``rpc``."""

    code: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    message: Annotated[str, StringConstraints(max_length=1000)] = ""


class RpcError(ClientBase):
    """An ERP terminal's refusal of an ``rpc``."""

    type: Literal["rpc_error"]
    id: MessageId
    error: RpcErrorBody


class Command(Body):
    """An ERP terminal's request over its socket: the HTTP route's body, its path ids and an ``id``.

    Strict as the HTTP bodies are (unknown fields refused). ``store_id`` may be left out: it is the
    terminal's own store; when given it must be (as the HTTP path's ``{store_id}``).
    """

    id: MessageId
    store_id: Id | None = None
    order_id: Id


class LockAcquire(Command, LockRequest):
    """``POST .../locks``: take an order, presettle or payment lock."""

    type: Literal["lock.acquire"]


class LockRenew(Command, TokenBody):
    """``POST .../locks/{kind}/renew``."""

    type: Literal["lock.renew"]
    kind: Kind


class LockRelease(Command, TokenBody):
    """``POST .../locks/{kind}/release``."""

    type: Literal["lock.release"]
    kind: Kind


class OrderCheck(Command, CheckRequest):
    """``POST .../check``: may the action be done on the order now."""

    type: Literal["order.check"]


class PaymentComplete(Command, PaymentRequest):
    """``POST .../payments``: complete the terminal's own payment."""

    type: Literal["payment.complete"]


ErpCommand = Union[LockAcquire, LockRenew, LockRelease, OrderCheck, PaymentComplete]
#: The ``type`` of every command: a message of one of these types is always answered with a ``result``.
COMMAND_TYPES = frozenset(("lock.acquire", "lock.renew", "lock.release", "order.check", "payment.complete"))

ClientMessage = Annotated[
    Union[Ping, RpcResult, RpcError, LockAcquire, LockRenew, LockRelease, OrderCheck, PaymentComplete],
    Field(discriminator="type"),
]

CLIENT_MESSAGE: TypeAdapter[Any] = TypeAdapter(ClientMessage)
SERVER_MESSAGE: TypeAdapter[Any] = TypeAdapter(ServerMessage)


# --- pure builders ----------------------------------------------------------------------------


def dumps(value: Any) -> str:
    """Compact JSON text, non-ASCII kept (the wire form of every message)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


_EVENT_FIELDS = ("seq", "ts", "name", "store_id", "table_id", "order_id", "data")


def event_text(view: dict[str, Any]) -> str:
    """The wire text of an event already in its viewer form, fields in SPEC order."""
    return dumps({"type": "event", **{k: view.get(k) for k in _EVENT_FIELDS}})


def hello_text(role: str, client_id: str, seq: int, replay_count: int | None = None) -> str:
    """The wire text of ``hello``: a snapshot follows, or (``replay_count`` given) that many replayed events."""
    resume = "snapshot" if replay_count is None else "replay"
    return Hello(role=role, client_id=client_id, seq=seq, resume=resume,
                 replay_count=replay_count or 0).model_dump_json()


def snapshot_text(seq: int, orders: list[dict[str, Any]], locks: list[dict[str, Any]]) -> str:
    """The wire text of ``snapshot``; locks must already be in the viewer form (no token)."""
    model = Snapshot(seq=seq, orders=orders, locks=locks)
    return model.model_dump_json(exclude={"locks": {"__all__": {"token"}}})


def pong_text(message_id: int | str | None) -> str:
    """The wire text of ``pong``."""
    return Pong(id=message_id).model_dump_json()


def error_text(code: str, *, message_id: int | str | None = None, details: list[Any] | None = None) -> str:
    """The wire text of an ``error`` with the SPEC error body for ``code``."""
    zh, en = MESSAGES[code]
    detail = ErrorDetail(code=code, message=zh, message_en=en, force_allowed=False, lock=None, order=None,
                         details=details)
    return ErrorMessage(id=message_id, error=detail).model_dump_json()


def result_text(message_id: int | str, body: BaseModel) -> str:
    """The wire text of a successful command: ``result`` is the HTTP route's body, byte for byte."""
    return f'{{"type":"result","id":{dumps(message_id)},"success":true,"result":{body.model_dump_json()}}}'


def result_error_text(message_id: int | str, error: TablelockError) -> str:
    """The wire text of a refused command: the HTTP route's SPEC error body and its ``status``."""
    body = {**error.body()["error"], "status": error.status}
    return dumps({"type": "result", "id": message_id, "success": False, "error": body})


def validation_details(exc: ValidationError) -> list[dict[str, Any]]:
    """A pydantic error as the ``details`` list of VALIDATION_ERROR (no input echoed back)."""
    return [
        {"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]}
        for e in exc.errors(include_url=False, include_context=False, include_input=False)
    ][:10]


def json_schemas() -> dict[str, Any]:
    """JSON Schemas of both directions, for the OpenAPI document (``x-websocket`` or components)."""
    return {
        "ServerMessage": SERVER_MESSAGE.json_schema(ref_template="#/components/schemas/{model}"),
        "ClientMessage": CLIENT_MESSAGE.json_schema(ref_template="#/components/schemas/{model}"),
    }
