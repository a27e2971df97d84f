"""docs/protocol.md is executable: its marked HTTP examples are replayed, in page order, against the
coordinator (real Redis, the seeded shop, the ERP simulator's master), its websocket examples are
validated against the wire models, and every other JSON example must at least parse.

The conventions are in ``tests/support/doc_examples.py`` and in the page's own "How to read the
examples". Only the single Redis server is used: the page describes behaviour, which the rest of
the suite already pins on the cluster too.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import typing
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import BaseModel, TypeAdapter

from coordinator.app import build_app
from coordinator.core import errors as error_texts
from coordinator.core import models
from coordinator.core.rules import Action, Role
from coordinator.payments import records
from coordinator.realtime import messages
from tests.support.app import ADMIN_TOKEN, Shop, h5
from tests.support.doc_examples import Bindings, Block, Exchange, blocks, exchange, json_values, match
from tests.support.sandbox import SandboxProcess

PAGE = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"


@pytest.fixture
def redis_url(redis_single_url: str) -> str:
    """The examples run once, on the single Redis server (see the module docstring)."""
    return redis_single_url


@pytest.fixture
async def client(aiohttp_client, aiohttp_server, settings):
    """The coordinator on a loopback port that is also its public URL: the sandbox provider's
    notifications reach it (the provider payment of the page, C8)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = build_app(settings.model_copy(update={"public_url": f"http://127.0.0.1:{port}"}))
    return await aiohttp_client(await aiohttp_server(app, host="127.0.0.1", port=port))


def page_blocks() -> list[Block]:
    """The fenced blocks of docs/protocol.md."""
    return blocks(PAGE.read_text(encoding="utf-8"))


async def bindings_for(client: Any, shop: Shop, sandbox: SandboxProcess) -> Bindings:
    """The variables the page's examples use, bound to the seeded shop's ids and tokens and the sandbox provider."""
    diner = (await h5(client, shop))["Authorization"][7:]
    return Bindings({
        "STORE": shop.store_id, "CASH": shop.a, "CASH_ID": shop.a_id, "WAITER": shop.b,
        "WAITER_ID": shop.b_id, "ADMIN": ADMIN_TOKEN, "QR": shop.qr, "H5": diner,
        "SANDBOX": sandbox.url, "SANDBOX_CONTROL": sandbox.token,
        "WECHATPAY_SETTINGS": json.dumps(sandbox.credentials["wechatpay"]),
    })


def _has_token(value: Any) -> bool:
    """Whether a ``token`` key appears anywhere in ``value`` (events and snapshots never carry one)."""
    if isinstance(value, dict):
        return "token" in value or any(_has_token(v) for v in value.values())
    return isinstance(value, list) and any(_has_token(v) for v in value)


class Player:
    """Replays the page's exchanges in order on one app, keeping the variables and open websockets."""

    def __init__(self, client: Any, bindings: Bindings) -> None:
        self.client, self.bindings, self.sockets = client, bindings, {}

    async def play(self, block: Block) -> list[str]:
        """Run one replay or receive block; the differences from the page (empty: it matches)."""
        if block.mark == "receive":
            return await self.receive(block.arg, json_values(block.text), f"docs/protocol.md:{block.line}")
        if block.mark == "send":
            return await self.send(block.arg, block.text, f"docs/protocol.md:{block.line}")
        ex = exchange(block)
        where = f"docs/protocol.md:{ex.line} ({ex.name})"
        headers = {k: self.bindings.fill(v, where) for k, v in ex.headers.items()}
        path = self.bindings.fill(ex.path, where)
        if ex.status == 101:
            return await self.connect(ex, path, headers, where)
        body = self.bindings.fill(ex.body, where) if ex.body else None
        if body is not None:
            headers.setdefault("Content-Type", "application/json")
        if path.startswith("http"):  # another server of the story (the sandbox provider)
            async with aiohttp.ClientSession() as http, http.request(ex.method, path, data=body, headers=headers) as resp:
                text = await resp.text()
        else:
            resp = await self.client.request(ex.method, path, data=body, headers=headers)
            text = await resp.text()
        problems = [] if resp.status == ex.status else [f"status: expected {ex.status}, got {resp.status}"]
        for name, value in ex.response_headers.items():
            problems += match(value, resp.headers.get(name, "<absent>"), self.bindings, f"header {name}")
        if ex.expected:
            (expected,) = json_values(ex.expected)
            try:
                actual = json.loads(text)
            except ValueError:
                actual = text
            problems += match(expected, actual, self.bindings)
        return [f"{where}: {p}" for p in problems] + ([f"  answer was: {text[:600]}"] if problems else [])

    async def connect(self, ex: Exchange, path: str, headers: dict[str, str], where: str) -> list[str]:
        """Open the websocket of a 101 replay (kept under its name) and match its first messages."""
        offered = tuple(p.strip() for p in headers.pop("Sec-WebSocket-Protocol", "").split(",") if p.strip())
        ws = await self.client.ws_connect(path, protocols=offered, headers=headers)
        self.sockets[ex.name] = ws
        problems = []
        for header, value in ex.response_headers.items():
            assert header == "Sec-WebSocket-Protocol", f"{where}: only the subprotocol is checked on a 101"
            problems += [f"{where}: {p}" for p in match(value, ws.protocol, self.bindings, f"header {header}")]
        first, *rest = json_values(ex.expected)
        problems += await self.receive(ex.name, [first], where, skip=False)  # hello, first of all
        return problems or await self.receive(ex.name, rest, where)

    async def receive(self, name: str, expected: list[Any], where: str, skip: bool = True) -> list[str]:
        """Match the next messages of socket ``name`` (with ``skip``, events of other names are passed over)."""
        ws, seen = self.sockets[name], []
        for want in expected:
            while True:
                try:
                    got = await ws.receive_json(timeout=5)
                except (TimeoutError, asyncio.TimeoutError):
                    return [f"{where} ({name}): no message matching {want} within 5 s", f"  messages were: {seen}"[:1500]]
                seen.append(got)
                passed_over = (skip and got.get("type") == "event" and isinstance(want, dict)
                               and (want.get("type") == "result"
                                    or (want.get("type") == "event" and got.get("name") != want.get("name"))))
                if not passed_over:
                    break
            # A command's result is the holder's own answer (as an HTTP grant is): its token is no broadcast.
            broadcast = got.get("type") != "result"
            problems = match(want, got, self.bindings) + (["a lock token in a broadcast"]
                                                          if broadcast and _has_token(got) else [])
            if problems:
                return [f"{where} ({name}): {p}" for p in problems] + [f"  messages were: {seen}"[:1500]]
        return []

    async def send(self, name: str, text: str, where: str) -> list[str]:
        """Send the messages of a ``<!-- send -->`` block on socket ``name``, one frame each."""
        for value in json_values(self.bindings.fill(text, where)):
            await self.sockets[name].send_str(json.dumps(value, ensure_ascii=False))
        return []

    async def close(self) -> None:
        """Close every websocket the replay opened."""
        for ws in self.sockets.values():
            await ws.close()


async def test_replayed_examples_match_the_coordinator(client, shop, erp, sandbox):
    """Every ``<!-- replay -->``/``<!-- receive -->`` block of the page, run in order (``<!-- send -->`` blocks sent on their socket), gets the documented answer."""
    player = Player(client, await bindings_for(client, shop, sandbox))
    played = [b for b in page_blocks() if b.mark in ("replay", "receive", "send")]
    assert len(played) >= 20, "the page has lost its replayable examples"
    try:
        for block in played:
            problems = await player.play(block)
            assert not problems, "\n".join(problems)
    finally:
        await player.close()


def _model(name: str) -> Any:
    """The wire model a ``<!-- shape: name -->`` block names."""
    found = getattr(models, name, None) or getattr(messages, name, None) or getattr(records, name, None)
    assert isinstance(found, type) and issubclass(found, BaseModel), f"no model named {name}"
    return found


#: What the ``data`` of each event carries, beyond the envelope (SPEC §7 and the page's table).
EVENT_DATA: dict[str, dict[str, Any]] = {
    "lock.acquired": {"lock": models.Lock},
    "lock.renewed": {"lock": models.Lock},
    "lock.released": {"lock": models.Lock, "reason": str},
    "lock.expired": {"lock": models.Lock},
    "lock.forced": {"lock": models.Lock, "by": models.ErpHolder | models.H5Holder | models.ViewerHolder},
    "order.updated": {"order": models.Order},
    "order.paid": {"order": models.Order, "payment_ref": str, "amount_cents": int},
    "payment.rejected": {"code": str, "payment_ref": str, "amount_cents": int, "version": int},
    "config.updated": {"config": dict},
    "terminal.status": {"terminal_id": str, "online": bool},
    "order.moved": {"from_table_id": str, "to_table_id": str, "order": models.Order},
    "order.merged": {"into": str, "from": list[str], "order": models.Order},
    "order.reopened": {"order": models.Order},
    "refund.needed": {"reason": str, "paid_cents": int, "operation": str},
    "service.requested": {"request": dict},
    "service.taken": {"request": dict},
    "share.paid": {"share": models.Share, "paid_cents": int, "remaining_cents": int, "order": models.Order},
    "share.refund_due": {"paid_cents": int, "total_cents": int, "refund_cents": int},
}


def shape_problems(block: Block) -> list[str]:
    """Why the messages of a ``<!-- shape -->`` block do not fit their model (empty: they do)."""
    problems: list[str] = []
    kind, _, event_name = block.arg.partition(" ")
    for value in json_values(block.text):
        try:
            if kind == "event":
                event = messages.Event.model_validate(value)
                assert event.name == event_name, f"the block says {event_name}, the message is {event.name}"
                for key, shape in EVENT_DATA[event_name].items():
                    assert key in event.data, f"data.{key} missing"
                    TypeAdapter(shape).validate_python(event.data[key], strict=shape in (str, int, bool))
            else:
                _model(kind).model_validate(value)
        except (AssertionError, ValueError) as exc:
            problems.append(f"docs/protocol.md:{block.line} ({block.arg}): {exc}")
    return problems


def test_websocket_examples_fit_the_wire_models():
    """Every ``<!-- shape -->`` block validates against the pydantic model (or event data) it names."""
    shaped = [b for b in page_blocks() if b.mark == "shape"]
    assert len(shaped) >= 10, "the page has lost its websocket examples"
    problems = [p for block in shaped for p in shape_problems(block)]
    assert not problems, "\n".join(problems)


def test_every_other_json_example_parses():
    """A ```json block that is neither replayed nor shaped is still JSON (``…`` aside), unless marked not-json."""
    problems = []
    for block in page_blocks():
        if block.lang == "json" and block.mark not in ("not-json", "shape"):
            try:
                json_values(block.text)
            except ValueError as exc:
                problems.append(f"docs/protocol.md:{block.line}: {exc}")
    assert not problems, "\n".join(problems)


def coordinator_texts() -> set[str]:
    """Every zh-CN text the coordinator may put in an error (SPEC §5 messages table and the rest)."""
    texts = {zh for zh, _ in error_texts.MESSAGES.values()}
    texts |= {zh for zh, _ in error_texts.LOCK_LOST_BY_KIND.values()}  # LOCK_LOST per lock kind
    for code in ("ORDER_LOCKED", "PAYMENT_LOCKED", "PRESETTLED"):
        for action in Action:
            texts.add(error_texts.lock_message(code, Role.ERP, action, True)[0])
    return texts


def test_documented_messages_are_the_coordinators():
    """Each row of the page's messages tables (ERP and H5) quotes a text the coordinator really sends, verbatim."""
    page = PAGE.read_text(encoding="utf-8")
    sections = [part.split("<!-- /messages -->", 1)[0] for part in page.split("<!-- messages -->")[1:]]
    quoted = [row.split("|")[3].strip() for part in sections for row in part.splitlines() if row.startswith("| `")]
    assert len(sections) == 2 and len(quoted) >= 15
    unknown = [text for text in quoted if text not in coordinator_texts()]
    assert not unknown, f"texts the coordinator never sends: {unknown}"


def test_a_wrong_example_is_caught():
    """The matcher reports a wrong literal, a missing key and a changed capture, so a drifting page fails."""
    bindings = Bindings({"STORE": "s1"})
    (expected,) = json_values('{"lock": {"kind": "order", "fence": "$F", …}, "store": "$STORE", "n": […]}')
    assert match(expected, {"lock": {"kind": "order", "fence": 7, "x": 1}, "store": "s1", "n": [1]}, bindings) == []
    assert bindings.values["F"] == "7"
    assert match(expected, {"lock": {"kind": "payment", "fence": 8}, "store": "s2", "n": [1]}, bindings) == [
        "$.lock.kind: expected 'order', got 'payment'",
        "$.lock.fence: expected 7 ($F), got 8",
        "$.store: expected 's1' ($STORE), got 's2'",
    ]
    assert match({"a": [1, "…"]}, {}, bindings) == ["$.a: missing"]
    assert match("请求参数有误:…", "请求参数有误:kind: bad", bindings) == []


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_contents_links_reach_their_sections():
    """Every in-page link (the table of contents, the cross references) names a heading of the page."""
    page = PAGE.read_text(encoding="utf-8")
    outside_code = re.sub(r"```.*?```", "", page, flags=re.S)
    anchors = {github_anchor(line.lstrip("#")) for line in outside_code.splitlines() if line.startswith("#")}
    links = re.findall(r"\]\(#([^)]+)\)", outside_code)
    assert len(links) >= 25
    assert sorted(set(links) - anchors) == []


def _section(page: str, heading: str) -> str:
    """The text of the page from ``heading`` to the next heading of the same or a higher level."""
    level = heading.split(" ", 1)[0]
    start = page.index(f"\n{heading}")
    ends = [page.find(f"\n{'#' * n} ", start + 1) for n in range(1, len(level) + 1)]
    return page[start:min([e for e in ends if e > 0] or [len(page)])]


def test_event_and_error_tables_are_complete():
    """The A6.2 events table names every event the coordinator emits; the A14 errors table every error code."""
    page = PAGE.read_text(encoding="utf-8")
    events = _section(page, "### A6.2 Events")
    listed = set(re.findall(r"^\| `([a-z_]+\.[a-z_]+)` \|", events, flags=re.MULTILINE))
    lua = Path(__file__).resolve().parent.parent / "coordinator" / "store" / "lua"
    emitted = {name for f in lua.glob("*.lua") for name in re.findall(r"'([a-z_]+\.[a-z_]+)'", f.read_text())}
    assert sorted(emitted - set(typing.get_args(messages.EventName))) == []  # the wire model knows them all
    assert sorted(set(typing.get_args(messages.EventName)) - listed) == []
    errors = _section(page, "## A14. Errors")
    # LockConflict takes its code per denial: the three lock codes of SPEC §2.
    classes, codes = [error_texts.TablelockError], {"ORDER_LOCKED", "PAYMENT_LOCKED", "PRESETTLED"}
    while classes:  # every class of the error tree with a code of its own
        cls = classes.pop()
        classes += cls.__subclasses__()
        codes |= {cls.code} if isinstance(getattr(cls, "code", None), str) else set()
    assert sorted(c for c in codes if f"`{c}`" not in errors) == []
