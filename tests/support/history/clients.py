"""Recorded clients of a set of coordinator processes: HTTP calls, websocket subscribers that resume
with ``since``, and a stand-in ERP master answering RPCs. Every wait and retry is bounded.

Only 127.0.0.1 is ever contacted: the URLs come from ``tests.support.processes`` processes.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp

from coordinator.launcher import ServeProcess
from tests.support.history.recorder import Connection, Fault, History, Op, Received
from tests.support.processes import start_coordinator

API = "/api/v1"


class Processes:
    """The coordinator processes of a run, by slot; a killed slot can be refilled with a new process."""

    def __init__(self, redis_url: str, data_dir: Path, env: dict[str, str]) -> None:
        self.redis_url = redis_url
        self.data_dir = data_dir
        self.env = env
        self.slots: list[ServeProcess | None] = []
        self.started: list[ServeProcess] = []

    @classmethod
    def of(cls, procs: list[ServeProcess]) -> Processes:
        """Wrap processes started elsewhere (the ``coordinators`` fixture); refill is not available."""
        self = cls.__new__(cls)
        self.redis_url, self.data_dir, self.env = "", Path("."), {}
        self.slots, self.started = list(procs), []
        return self

    def start(self, n: int) -> None:
        """Start ``n`` processes (blocking)."""
        for _ in range(n):
            self.slots.append(self._new())

    def _new(self) -> ServeProcess:
        proc = start_coordinator(self.redis_url, self.data_dir / f"proc-{len(self.started)}", env=self.env)
        self.started.append(proc)
        return proc

    def alive(self) -> list[int]:
        """Slots with a running process."""
        return [i for i, p in enumerate(self.slots) if p is not None]

    def url(self, slot: int) -> str | None:
        """Base URL of the slot's process, None while it is down."""
        proc = self.slots[slot]
        return proc.url if proc is not None else None

    def kill(self, slot: int) -> None:
        """SIGKILL the slot's process (blocking, bounded)."""
        proc, self.slots[slot] = self.slots[slot], None
        if proc is not None:
            proc.kill()

    def refill(self, slot: int) -> None:
        """Start a new process in an empty slot (blocking)."""
        self.slots[slot] = self._new()

    def stop_all(self) -> None:
        """Stop every process this object ever started."""
        for proc in self.started:
            proc.stop()


class Api:
    """HTTP calls to any live process, each recorded as an Op in the history."""

    def __init__(self, history: History, processes: Processes, *, timeout: float = 6.0) -> None:
        self.history = history
        self.processes = processes
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout),
                                          connector=aiohttp.TCPConnector(limit=200, force_close=False))
        self.statuses: dict[str, int] = {}

    async def close(self) -> None:
        """Close the HTTP session."""
        await self.http.close()

    async def call(self, actor: str, role: str, token: str | None, method: str, path: str, body: Any = None, *,
                   slot: int | None = None) -> Op:
        """Send one request to ``slot`` (or a random live process) and record it."""
        alive = self.processes.alive()
        if slot is None or slot not in alive:
            slot = random.choice(alive) if alive else -1
        base = self.processes.url(slot) if slot >= 0 else None
        op = Op(len(self.history.ops), actor, role, slot, method, path, body, time.monotonic())
        self.history.ops.append(op)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if base is None:
            op.t1, op.error = time.monotonic(), "no live process"
            self._count(op)
            return op
        try:
            async with self.http.request(method, base + API + path, json=body, headers=headers) as response:
                op.status = response.status
                raw = await response.read()
                op.t1 = time.monotonic()
                if raw:
                    try:
                        op.resp = json.loads(raw)
                    except ValueError:
                        op.resp = {"_raw": raw[:200].decode(errors="replace")}
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            op.t1, op.error = time.monotonic(), type(exc).__name__
        self._count(op)
        return op

    def _count(self, op: Op) -> None:
        key = str(op.status) if op.status is not None else f"error:{op.error}"
        if op.status == 503 and isinstance(op.resp, dict):
            key = f"503:{(op.resp.get('error') or {}).get('code')}"
        self.statuses[key] = self.statuses.get(key, 0) + 1


RpcHandler = Callable[[str, dict[str, Any]], Awaitable[tuple[str, Any]]]


class Subscriber:
    """A websocket client that records every event it receives and resumes with ``since`` after a drop.

    ``rpc``: for the ERP master, answers ``rpc`` messages: ("result", value) | ("error", {code, message})
    | ("drop", None) (close the socket without answering) | ("silent", None).
    """

    def __init__(self, name: str, token: str, history: History, processes: Processes, *, prefer: int = 0,
                 rpc: RpcHandler | None = None, record: bool = True) -> None:
        self.name = name
        self.token = token
        self.history = history
        self.processes = processes
        self.prefer = prefer
        self.rpc = rpc
        self.record = record
        self.last: int | None = None
        self.connections = 0
        self.hello = asyncio.Event()
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._task: asyncio.Task | None = None
        self._http = aiohttp.ClientSession()
        self._tasks: set[asyncio.Task] = set()
        self._running = True

    def start(self) -> None:
        """Connect in the background (see ``hello`` for the first connection)."""
        self._task = asyncio.create_task(self._run(), name=f"subscriber-{self.name}")

    async def stop(self) -> None:
        """Close the socket and stop reconnecting."""
        self._running = False
        for task in [self._task, *self._tasks]:
            if task is not None:
                task.cancel()
        await asyncio.gather(*(t for t in [self._task, *self._tasks] if t is not None), return_exceptions=True)
        await self._http.close()

    async def drop(self) -> None:
        """Abort the current socket without a close handshake (it reconnects with ``since``)."""
        ws = self._ws
        if ws is not None and ws._response.connection is not None:  # noqa: SLF001
            ws._response.connection.transport.abort()  # noqa: SLF001

    async def caught_up(self, seq: int, timeout: float) -> bool:
        """Wait (bounded) until this subscriber has received everything up to ``seq``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.last is not None and self.last >= seq:
                return True
            await asyncio.sleep(0.05)
        return False

    def _slot(self) -> int | None:
        alive = self.processes.alive()
        if not alive:
            return None
        return self.prefer if self.prefer in alive else random.choice(alive)

    async def _run(self) -> None:
        backoff = 0.05
        while self._running:
            slot = self._slot()
            if slot is None:
                await asyncio.sleep(0.2)
                continue
            base = self.processes.url(slot)
            if base is None:
                await asyncio.sleep(0.05)
                continue
            url = "ws" + base[4:] + f"{API}/ws?token={quote(self.token, safe='')}"
            if self.last is not None:
                url += f"&since={self.last}"
            conn = Connection(self.name, self.connections, slot, self.last, time.monotonic())
            self.connections += 1
            if self.record:
                self.history.connections.append(conn)
            try:
                async with self._http.ws_connect(url, heartbeat=5.0, timeout=aiohttp.ClientWSTimeout(ws_close=2),
                                                 max_msg_size=0) as ws:
                    self._ws = ws
                    pinger = asyncio.create_task(self._ping(ws))
                    try:
                        async for msg in ws:
                            if msg.type != aiohttp.WSMsgType.TEXT:
                                break
                            await self._on(conn, json.loads(msg.data), ws)
                            backoff = 0.05
                    finally:
                        pinger.cancel()
                    conn.close_code = ws.close_code
            except asyncio.CancelledError:
                raise
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError) as exc:
                conn.close_code = conn.close_code or -1
                del exc
            finally:
                self._ws = None
                conn.t_close = time.monotonic()
            if not self._running:
                return
            await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
            backoff = min(backoff * 2, 1.0)

    async def _ping(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        # An application ping every few seconds keeps the server's idle timer away from a quiet client.
        while not ws.closed:
            await asyncio.sleep(5)
            try:
                await ws.send_str('{"type":"ping"}')
            except (ConnectionError, RuntimeError, aiohttp.ClientError):
                return

    async def _on(self, conn: Connection, message: dict[str, Any], ws: aiohttp.ClientWebSocketResponse) -> None:
        kind = message.get("type")
        if kind == "hello":
            conn.hello_seq = message["seq"]
            if self.last is None:
                self.last = message["seq"]
            self.hello.set()
        elif kind == "snapshot":
            conn.snapshot = True
            self.last = message["seq"] if self.last is None else max(self.last, message["seq"])
        elif kind == "event":
            if self.record:
                self.history.received.append(Received(self.name, conn.conn, time.monotonic(), message))
            self.last = message["seq"] if self.last is None else max(self.last, message["seq"])
        elif kind == "rpc" and self.rpc is not None:
            task = asyncio.create_task(self._answer(message, ws))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _answer(self, message: dict[str, Any], ws: aiohttp.ClientWebSocketResponse) -> None:
        assert self.rpc is not None
        try:
            what, value = await self.rpc(message["method"], message.get("params") or {})
        except Exception as exc:  # the stand-in ERP failing is an error answer, not a crash
            what, value = "error", {"code": "ERP_ERROR", "message": repr(exc)[:200]}
        if what == "drop":
            self.history.faults.append(Fault("master_drop", time.monotonic(), time.monotonic(), message["method"]))
            await self.drop()
            return
        if what == "silent":
            return
        reply = {"type": "rpc_result", "id": message["id"], "result": value} if what == "result" else \
            {"type": "rpc_error", "id": message["id"], "error": value}
        try:
            await ws.send_str(json.dumps(reply, ensure_ascii=False))
        except (ConnectionError, RuntimeError, aiohttp.ClientError):
            pass  # the socket went away; the coordinator answers the caller ERP_UNREACHABLE


async def seed_store(api: Api, store_id: str, *, tables: list[str], terminals: list[tuple[str, bool]],
                     config: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Create a store, its tables and terminals through the admin API; (terminals, table -> qr token)."""
    from tests.support.app import ADMIN_TOKEN

    async def ok(method: str, path: str, body: Any, expect: int) -> Any:
        for _ in range(50):
            op = await api.call("admin", "admin", ADMIN_TOKEN, method, path, body)
            if op.status == expect:
                return op.resp
            await asyncio.sleep(0.1)
        raise AssertionError(f"{method} {path}: {op.status} {op.resp}")

    await ok("PUT", f"/admin/stores/{store_id}", {"name": "历史测试店"}, 200)
    created = [await ok("POST", f"/admin/stores/{store_id}/terminals", {"name": name, "master": master}, 201)
               for name, master in terminals]
    qrs = {}
    for table in tables:
        record = await ok("PUT", f"/admin/stores/{store_id}/tables/{table}", {"name": f"{table}号桌"}, 200)
        qrs[table] = record["qr_url"].split("qr=", 1)[1]
    await ok("PATCH", f"/admin/stores/{store_id}/config", config, 200)
    return created, qrs


async def sample_clock(history: History, redis: Any, n: int = 5) -> None:
    """Record (monotonic, Redis ms) pairs; the one with the shortest round trip is kept."""
    best: tuple[float, float, int] | None = None
    for _ in range(n):
        t0 = time.monotonic()
        seconds, micros = await redis.time()
        t1 = time.monotonic()
        ms = seconds * 1000 + micros // 1000
        if best is None or t1 - t0 < best[0]:
            best = (t1 - t0, (t0 + t1) / 2, ms)
    assert best is not None
    history.clock.append((best[1], best[2]))
