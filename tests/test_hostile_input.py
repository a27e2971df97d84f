"""Hostile input against a real coordinator process: Schemathesis over the OpenAPI document, oversized
and malformed bodies, garbage headers and paths, and websocket garbage — never a 5xx, never a
traceback, responses as documented, and the process healthy afterwards.

The coordinator is a ``tablelock serve`` subprocess (Schemathesis calls it synchronously, so it
cannot share the test's event loop) with a store seeded through the admin API and the ERP
simulator's master terminal answering RPCs from a background thread, so the H5 endpoints reach
the ERP instead of stopping at ``503 ERP_UNREACHABLE``.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from coordinator.launcher import ServeProcess
from erp_simulator.db import ErpDatabase
from erp_simulator.terminal import Terminal
from tests.support.app import ADMIN_TOKEN
from tests.support.processes import start_coordinator

#: Examples per operation and generation mode; 29 operations x 2 modes x 20 take about 50 s.
MAX_EXAMPLES = 20
MAX_BODY = 65536  # Settings.max_body_bytes default, which the subprocess runs with
ERROR_KEYS = {"code", "message", "message_en", "force_allowed", "lock", "order", "details"}


@dataclass
class Live:
    """A seeded coordinator process and the tokens that reach each area of the API."""

    proc: ServeProcess
    store_id: str
    admin: str
    terminal: str
    session: str
    qr: str
    loop: asyncio.AbstractEventLoop
    master: Terminal
    thread: threading.Thread
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        """Base URL of the process."""
        return self.proc.url

    def token_for(self, tag: str) -> str | None:
        """The bearer token for an operation of ``tag`` (admin, erp, h5)."""
        return {"admin": self.admin, "erp": self.terminal, "h5": self.session}.get(tag)


def _run_master(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    loop.run_forever()


@pytest.fixture(scope="module")
def live(redis_single_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """A coordinator subprocess with a store, a master ERP terminal answering RPCs, table T1 and an open order."""
    tmp = tmp_path_factory.mktemp("hostile")
    proc = start_coordinator(redis_single_url, tmp / "coordinator")
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    store = f"s-hostile-{int(time.time() * 1000) % 10**9}"
    api = f"{proc.url}/api/v1/admin/stores/{store}"
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=_run_master, args=(loop,), daemon=True)
    thread.start()
    master = None
    try:
        requests.put(api, json={"name": "压力测试店"}, headers=admin, timeout=5).raise_for_status()
        cashier = requests.post(f"{api}/terminals", json={"name": "收银台", "master": True}, headers=admin, timeout=5).json()
        table = requests.put(f"{api}/tables/T1", json={"name": "一号桌"}, headers=admin, timeout=5).json()
        qr = table["qr_url"].split("qr=", 1)[1]
        db = ErpDatabase(tmp / "erp.sqlite")
        db.put_table("T1", "一号桌")
        for sku, name, price in (("tea", "龙井茶", 1800), ("fish", "清蒸鲈鱼", 6800)):
            db.put_dish(sku, name, price)

        async def start() -> Terminal:
            terminal = Terminal(proc.url, store, cashier["token"], db, name="收银台", master=True)
            await terminal.start()
            await terminal.wait_connected(10)
            await terminal.open_order("T1", [{"sku": "tea", "qty": 2}])
            return terminal

        master = asyncio.run_coroutine_threadsafe(start(), loop).result(20)
        session = requests.post(f"{proc.url}/api/v1/h5/sessions", json={"qr_token": qr}, timeout=5).json()
        yield Live(proc, store, ADMIN_TOKEN, cashier["token"], session["session_token"], qr, loop, master, thread)
    finally:
        if master is not None:
            asyncio.run_coroutine_threadsafe(master.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        proc.stop()


def assert_ready(live: Live) -> None:
    """The process is alive and /readyz answers 200."""
    assert live.proc.proc.poll() is None, "the coordinator process died"
    assert requests.get(f"{live.url}/readyz", timeout=2).status_code == 200


def assert_error_body(response: requests.Response, status: int, code: str) -> None:
    """``response`` is ``status`` with the SPEC error body of ``code`` and no Python detail."""
    assert response.status_code == status, (response.status_code, response.text[:300])
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == ERROR_KEYS
    assert body["error"]["code"] == code
    assert "Traceback" not in response.text and "File \"" not in response.text


# --- Schemathesis -------------------------------------------------------------------------


def _align(case: Any) -> None:
    """Make a positive case satisfy the cross-field rules a JSON schema cannot state.

    ``PUT .../orders/{order_id}`` wants the body's ``order_id`` equal to the path's and distinct
    ``line_id``s, a ``total_cents`` that reconciles with the lines and adjustments (whose
    ``line_id``s name lines of the order), a share's ``part`` at most its ``parts``, and the
    audit and reconciliation windows want
    ``from <= to``; all are 400 otherwise, correctly.
    """
    path = case.path_parameters or {}
    if isinstance(case.body, dict) and "order_id" in path and "order_id" in case.body:
        case.body["order_id"] = path["order_id"]
    lines = case.body.get("items") if isinstance(case.body, dict) else None
    ids = [line["line_id"] for line in lines or () if isinstance(line, dict) and "line_id" in line]
    if len(set(ids)) < len(ids):  # an order's line_ids are distinct (400 otherwise, correctly)
        for i, line in enumerate(lines):
            line["line_id"] = f"{line['line_id'][:58]}-{i}"
    if isinstance(case.body, dict) and "total_cents" in case.body and isinstance(lines, list):
        _reconcile(case.body, lines)
    share = case.body.get("share") if isinstance(case.body, dict) else None
    if isinstance(share, dict) and isinstance(share.get("part"), (int, float)) and isinstance(share.get("parts"), (int, float)):
        share["part"] = min(share["part"], share["parts"])  # part <= parts (400 otherwise, correctly)
    query = case.query or {}
    start, end = query.get("from"), query.get("to")
    if isinstance(start, int) and isinstance(end, int) and start > end:
        query["from"], query["to"] = end, start


def _reconcile(body: dict[str, Any], lines: list[Any]) -> None:
    """Set the body's total to its lines plus adjustments, within the range a total may take."""
    names = {line.get("line_id") for line in lines if isinstance(line, dict)}
    adjustments = body.get("adjustments")
    adjustments = adjustments if isinstance(adjustments, list) else []
    for adjustment in adjustments:
        if isinstance(adjustment, dict) and adjustment.get("line_id") not in names:
            adjustment["line_id"] = None

    def total() -> int:
        lines_cents = sum(int(l["qty"]) * int(l["unit_price_cents"]) for l in lines if isinstance(l, dict))
        return lines_cents + sum(int(a["amount_cents"]) for a in adjustments if isinstance(a, dict))

    if not 0 <= total() <= 10**12:  # no total reconciles these: make them small
        for line in lines:
            line["unit_price_cents"] = 1
        adjustments.clear()
    body["total_cents"] = total()


@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")  # inside Schemathesis
def test_schemathesis_finds_no_server_error_and_no_schema_mismatch(live):
    """Every operation, with generated valid and invalid input: no 5xx, documented statuses, bodies that match the schema."""
    schema = schemathesis.openapi.from_url(f"{live.url}/api/v1/openapi.json", timeout=5)

    @schema.auth(refresh_interval=None)
    class Bearer:
        """The admin, terminal or session token, by the operation's tag."""

        def get(self, case: Any, ctx: Any) -> str | None:
            return live.token_for(case.operation.definition.raw.get("tags", [""])[0])

        def set(self, case: Any, data: str | None, ctx: Any) -> None:
            if data:
                case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}

    failures: dict[str, list[str]] = {}
    calls: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    started = time.monotonic()
    operations = [result.ok() for result in schema.get_all_operations()]
    for operation in operations:
        tag = operation.definition.raw.get("tags", [""])[0]
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            name = f"{operation.method.upper()} {operation.path} [{mode.value}]"

            @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None,
                      phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(generation_mode=mode), own_store=st.booleans())
            def run(case: Any, own_store: bool) -> None:
                if mode is GenerationMode.POSITIVE:
                    # Half the valid cases reach the seeded store's order and table, past the scope check.
                    if own_store and tag in ("erp", "h5") and "store_id" in (case.path_parameters or {}):
                        pinned = {"store_id": live.store_id, "order_id": "o1", "table_id": "T1"}
                        case.path_parameters.update({k: v for k, v in pinned.items() if k in case.path_parameters})
                    _align(case)
                response = case.call(base_url=live.url, timeout=10)
                calls[name] += 1
                statuses[response.status_code] += 1
                if response.status_code == 413:
                    # Too large to read, so never validated: right only if the body really is over the limit.
                    sent = len(response.request.body or b"")
                    if sent <= MAX_BODY:
                        failures.setdefault(name, []).append(f"413 for a body of {sent} bytes")
                    return
                try:
                    case.validate_response(response, transport_kwargs={"base_url": live.url, "timeout": 10})
                except BaseException as exc:  # FailureGroup is an exception group: keep going, report all
                    failures.setdefault(name, []).append(str(exc)[:2000])

            run()
    live.stats.update(operations=len(operations), cases=sum(calls.values()), statuses=dict(statuses),
                      seconds=round(time.monotonic() - started, 1))
    print(f"\nschemathesis: {live.stats}")
    assert not failures, "\n\n".join(f"{name}:\n{msgs[0]}" for name, msgs in list(failures.items())[:5])
    assert len(operations) >= 25 and sum(calls.values()) >= MAX_EXAMPLES * len(operations)
    assert not any(status >= 500 for status in statuses)
    assert_ready(live)


# --- bodies, headers, paths ---------------------------------------------------------------


def _body_endpoints(live: Live) -> list[tuple[str, str, str]]:
    """(method, url, token) of an endpoint of each area that reads a JSON body."""
    s, o = live.store_id, "o1"
    return [
        ("PUT", f"/api/v1/admin/stores/{s}", live.admin),
        ("PATCH", f"/api/v1/admin/stores/{s}/config", live.admin),
        ("PUT", f"/api/v1/stores/{s}/orders/{o}", live.terminal),
        ("POST", f"/api/v1/stores/{s}/orders/{o}/locks", live.terminal),
        ("POST", f"/api/v1/stores/{s}/orders/{o}/payments", live.terminal),
        ("POST", "/api/v1/h5/sessions", ""),
        ("POST", "/api/v1/h5/items", live.session),
        ("POST", "/api/v1/h5/payments/start", live.session),
    ]


def test_oversized_bodies_are_413_with_or_without_content_length(live):
    """A body over max_body_bytes is 413 PAYLOAD_TOO_LARGE, declared up front or streamed chunked."""
    big = b'{"name": "' + b"x" * (MAX_BODY + 10) + b'"}'

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(big), 8192):
            yield big[start:start + 8192]

    for method, path, token in _body_endpoints(live):
        headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
        declared = requests.request(method, live.url + path, data=big, headers=headers, timeout=10)
        assert_error_body(declared, 413, "PAYLOAD_TOO_LARGE")
        streamed = requests.request(method, live.url + path, data=chunks(), headers=headers, timeout=10)
        assert_error_body(streamed, 413, "PAYLOAD_TOO_LARGE")
    assert_ready(live)


#: (An empty body counts as ``{}``, which is valid for PATCH .../config, so it is not here.)
MALFORMED = [
    b"not json", b"{", b"[]", b"null", b"42", b'"text"', b"\xff\xfe\x00garbage",
    b'{"name": NaN}', b'{"name": Infinity}',
    b"[" * 5000 + b"]" * 5000, b'{"a":' * 3000 + b"1" + b"}" * 3000,
    b'{"version": 1e400}', b'{"version": 123456789012345678901234567890}', b'{"token": "\\u0000\\ud800"}',
    json.dumps({"items": [{"sku": "tea", "qty": 1}] * 10_000}).encode()[:MAX_BODY - 1],
]


def test_malformed_bodies_are_client_errors_with_the_spec_body(live):
    """Non-JSON, wrong shapes, deep nesting, huge numbers and broken unicode are 4xx with the SPEC error body."""
    for method, path, token in _body_endpoints(live):
        headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
        for body in MALFORMED:
            response = requests.request(method, live.url + path, data=body, headers=headers, timeout=10)
            assert 400 <= response.status_code < 500, (method, path, body[:40], response.status_code, response.text[:200])
            assert set(response.json()["error"]) == ERROR_KEYS
            assert "Traceback" not in response.text
    assert_ready(live)


GARBAGE_TOKENS = ["", "Bearer", "x" * 10_000, "erp~" + "~" * 50, "h5~a~b~c~d~e", "qr~x~y~z", "erp~s~t~" + "é" * 20,
                  "h5~" + "~".join(["A" * 64] * 5), "\t", "null"]


def test_garbage_credentials_are_401(live):
    """Malformed, oversized and forged bearer tokens are 401 UNAUTHENTICATED on every area of the API."""
    paths = [f"/api/v1/admin/stores/{live.store_id}/config", f"/api/v1/stores/{live.store_id}/locks", "/api/v1/h5/table"]
    for token in GARBAGE_TOKENS:
        for path in paths:
            try:
                header = f"Bearer {token}".encode("utf-8")
            except UnicodeEncodeError:  # pragma: no cover - every token above encodes
                continue
            response = requests.get(live.url + path, headers={"Authorization": header}, timeout=5)
            if len(header) > 8000:
                # aiohttp refuses a header line over 8 KiB before routing: a 4xx, never a 5xx.
                assert 400 <= response.status_code < 500
                continue
            assert_error_body(response, 401, "UNAUTHENTICATED")
    assert_ready(live)


GARBAGE_IDS = ["-starts-with-dash", "a" * 65, "has space", "中文", "..", "%2e%2e", "a%2Fb", "%00", "o1%0d%0aX: y",
               "' OR 1=1 --", "{store_id}", "tl:{x}:seq"]


def test_garbage_path_ids_are_404(live):
    """Ids that break the SPEC id pattern, traversal and injection attempts in paths are 404 NOT_FOUND."""
    headers = {"Authorization": f"Bearer {live.terminal}"}
    for garbage in GARBAGE_IDS:
        for path in (f"/api/v1/stores/{live.store_id}/orders/{garbage}", f"/api/v1/stores/{garbage}/locks",
                     f"/api/v1/stores/{live.store_id}/orders/o1/locks/{garbage}/renew"):
            method = "POST" if path.endswith("renew") else "GET"
            response = requests.request(method, live.url + path, headers=headers, json={"token": "t"}, timeout=5)
            assert response.status_code in (403, 404), (path, response.status_code, response.text[:200])
            assert "Traceback" not in response.text
    assert_ready(live)


# --- websockets ---------------------------------------------------------------------------


async def _expect_error(ws: aiohttp.ClientWebSocketResponse, code: str = "VALIDATION_ERROR") -> dict[str, Any]:
    """The next non-event message, which must be an ``error`` with ``code``."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        msg = await ws.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.TEXT, msg
        data = json.loads(msg.data)
        if data["type"] in ("event", "hello", "snapshot"):
            continue
        assert data["type"] == "error" and data["error"]["code"] == code, data
        return data
    raise AssertionError("no error message within 5 s")


async def _hello(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    msg = await ws.receive(timeout=5)
    assert msg.type == aiohttp.WSMsgType.TEXT, msg
    hello = json.loads(msg.data)
    assert hello["type"] == "hello"
    return hello


async def test_websocket_garbage_gets_errors_and_the_socket_stays_usable(live):
    """Non-JSON, wrong types, binary and over-64-KiB frames each get an error message; a ping still gets its pong."""
    garbage: list[str | bytes] = [
        "not json", "{", "[]", "null", "42", '{"type": 5}', '{"type": "nope"}', '{"type": "ping", "id": {"a": 1}}',
        '{"type": "rpc_result"}', '{"type": "rpc_error", "id": 1, "error": {"code": ""}}', "\u0000\ud7ff",
        b"\x00\xff\xfe", b'{"type": "ping"', "x" * (64 * 1024 + 1),
    ]
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{live.proc.ws_url}?token={live.terminal}&since=abc", max_msg_size=0) as ws:
            await _hello(ws)
            for frame in garbage:
                if isinstance(frame, bytes):
                    await ws.send_bytes(frame)
                else:
                    await ws.send_str(frame)
                await _expect_error(ws)
            await ws.send_str('{"type": "ping", "id": "still-here"}')
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                data = json.loads((await ws.receive(timeout=5)).data)
                if data["type"] == "pong":
                    assert data["id"] == "still-here"
                    break
        async with http.ws_connect(f"{live.proc.ws_url}?token={live.session}") as ws:
            await _hello(ws)
            await ws.send_str('{"type": "rpc_result", "id": "x", "result": {}}')
            await _expect_error(ws, "FORBIDDEN")
    assert_ready(live)


async def test_websocket_oversized_frame_and_floods_close_cleanly(live):
    """A frame over the hard limit closes 1009, a message flood closes 1008, bad tokens close 4401; the process stays ready."""
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{live.proc.ws_url}?token={live.terminal}") as ws:
            await _hello(ws)
            await ws.send_str("y" * (1024 * 1024))
            closed = await _closed(ws)
            assert closed == 1009
        async with http.ws_connect(f"{live.proc.ws_url}?token={live.terminal}") as ws:
            await _hello(ws)
            for i in range(300):
                if ws.closed:
                    break
                await ws.send_str(json.dumps({"type": "ping", "id": i}))
            assert await _closed(ws) == 1008
        for token in ("garbage", live.terminal + "x", "h5~a~b~c~1~d"):
            async with http.ws_connect(f"{live.proc.ws_url}?token={token}") as ws:
                assert await _closed(ws) == 4401
        # Many sockets opened and dropped without a close handshake.
        sockets = [await http.ws_connect(f"{live.proc.ws_url}?token={live.session}") for _ in range(30)]
        for ws in sockets:
            ws._response.connection.transport.abort()  # type: ignore[union-attr]
        for ws in sockets:
            await ws.close()
    await asyncio.to_thread(assert_ready, live)
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{live.proc.ws_url}?token={live.terminal}") as ws:
            await _hello(ws)


async def _closed(ws: aiohttp.ClientWebSocketResponse) -> int | None:
    """Read until the server closes; its close code (bounded wait)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        msg = await ws.receive(timeout=10)
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED,
                        aiohttp.WSMsgType.ERROR):
            return ws.close_code
    raise AssertionError("the server did not close the socket within 10 s")


def test_process_log_has_no_unhandled_errors(live):
    """After all the hostile input, the coordinator's log shows no unhandled exception."""
    assert_ready(live)
    text = Path(live.proc.log).read_text(errors="replace")
    assert "unhandled error" not in text, text[-3000:]
