"""The sandbox payment provider as a real subprocess, and a notify_url server that records deliveries.

``sandbox`` starts ``python -m coordinator.payments.sandbox --port 0`` once per module on a temp
data dir, reads its credentials over HTTP, resets its switches before each test, and stops it
(SIGTERM, then SIGKILL) at the end so no process outlives the tests.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from coordinator.payments.providers import InvalidNotification, PaymentProvider

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SWITCHES = {"mode": "normal", "outcome": "paid", "notify": "normal", "delay_ms": 2000,
                    "pay_delay_ms": 0, "refund_delay_ms": 300}


@dataclass
class SandboxProcess:
    """A running sandbox: its URL, data dir, control token and the credentials it hands out."""

    url: str
    proc: subprocess.Popen[bytes]
    data_dir: Path
    token: str
    credentials: dict[str, Any]

    def keys(self) -> dict[str, str]:
        """The sandbox's own secrets (to forge notifications the way only the provider could)."""
        return json.loads((self.data_dir / "keys.json").read_text())

    def control_sync(self, body: dict[str, Any]) -> dict[str, Any]:
        """Set switches without an event loop (fixture set-up)."""
        req = urllib.request.Request(
            self.url + "/sandbox/control", data=json.dumps(body).encode(), method="POST",
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read())

    async def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        """Call the control API; return (status, JSON or text)."""
        headers = {"Authorization": f"Bearer {self.token}"}
        async with aiohttp.ClientSession() as s, s.request(method, self.url + path, json=body, headers=headers) as r:
            text = await r.text()
        try:
            return r.status, json.loads(text)
        except ValueError:
            return r.status, text

    async def control(self, **body: Any) -> dict[str, Any]:
        """Change process switches."""
        status, answer = await self.call("POST", "/sandbox/control", body)
        assert status == 200, answer
        return answer

    async def pay(self, out_trade_no: str, **body: Any) -> tuple[int, dict[str, Any]]:
        """Act as the diner on one trade."""
        return await self.call("POST", f"/sandbox/trades/{out_trade_no}/pay", body)

    async def trade(self, out_trade_no: str) -> dict[str, Any]:
        """Read a trade's state, refunds and deliveries."""
        status, answer = await self.call("GET", f"/sandbox/trades/{out_trade_no}")
        assert status == 200, answer
        return answer


def _read_line(proc: subprocess.Popen[bytes], timeout: float) -> str:
    line: list[bytes] = []
    reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(timeout)
    if not line:
        proc.kill()
        raise RuntimeError("sandbox did not start in time")
    return line[0].decode().strip()


def start_sandbox(data_dir: Path) -> SandboxProcess:
    """Start ``python -m coordinator.payments.sandbox --port 0`` on ``data_dir`` and read its credentials."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with open(data_dir / "sandbox.log", "ab") as log:  # the child keeps its own copy of the fd
        proc = subprocess.Popen(
            [sys.executable, "-m", "coordinator.payments.sandbox", "--port", "0", "--data-dir", str(data_dir)],
            stdout=subprocess.PIPE, stderr=log, env=env, cwd=ROOT,
        )
    try:
        line = _read_line(proc, 30)
        assert line.startswith("sandbox-pay listening on http://127.0.0.1:"), line
        url = line.rsplit(" ", 1)[1]
        with urllib.request.urlopen(url + "/sandbox/credentials", timeout=5) as r:
            credentials = json.loads(r.read())
    except BaseException:
        stop_sandbox(proc)
        raise
    return SandboxProcess(url, proc, data_dir, (data_dir / "control-token").read_text(), credentials)


def stop_sandbox(proc: subprocess.Popen[bytes]) -> int:
    """SIGTERM, wait (bounded), then SIGKILL; return the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    return proc.returncode


@pytest.fixture(scope="module")
def sandbox_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxProcess]:
    """Start one sandbox subprocess for the module and stop it afterwards."""
    sb = start_sandbox(tmp_path_factory.mktemp("sandbox-pay"))
    try:
        yield sb
    finally:
        stop_sandbox(sb.proc)


@pytest.fixture
def sandbox(sandbox_process: SandboxProcess) -> SandboxProcess:
    """The module's sandbox with its switches back at their defaults."""
    sandbox_process.control_sync(DEFAULT_SWITCHES)
    return sandbox_process


@dataclass
class Received:
    """One notification as the merchant's notify_url received it."""

    headers: dict[str, str]
    body: bytes
    result: Any  # the verified Notification, or the InvalidNotification raised


@dataclass
class NotifyServer:
    """A real HTTP server acting as notify_url, verifying with the adapter under test."""

    url: str = ""
    provider: PaymentProvider | None = None
    refuse_first: int = 0
    received: list[Received] = field(default_factory=list)
    arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def handle(self, request: web.Request) -> web.Response:
        """Verify, record and acknowledge one notification."""
        assert self.provider is not None
        body = await request.read()
        try:
            result: Any = self.provider.verify_notification(dict(request.headers), body)
            ok = True
        except InvalidNotification as exc:
            result, ok = exc, False
        if self.refuse_first > 0:
            self.refuse_first -= 1
            ok = False
        async with self.arrived:
            self.received.append(Received(dict(request.headers), body, result))
            self.arrived.notify_all()
        ack = self.provider.ack(ok)
        return web.Response(status=ack.status, body=ack.body, content_type=ack.content_type.split(";")[0])

    async def wait_for(self, count: int, timeout: float = 5.0) -> list[Received]:
        """Wait until ``count`` notifications have arrived; return them all."""
        async with self.arrived:
            await asyncio.wait_for(self.arrived.wait_for(lambda: len(self.received) >= count), timeout)
        return list(self.received)


@pytest.fixture
async def notify_server() -> AsyncIterator[NotifyServer]:
    """A notify_url server on a free loopback port (set ``.provider`` before use)."""
    ns = NotifyServer()
    app = web.Application()
    app.router.add_post("/notify", ns.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    ns.url = str(server.make_url("/notify"))
    try:
        yield ns
    finally:
        await server.close()
