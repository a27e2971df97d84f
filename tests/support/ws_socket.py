"""A websocket client for tests: bounded reads, every text frame kept and checked against the
declared server messages (``SERVER_MESSAGE``)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
from aiohttp import WSMsgType

from coordinator.realtime.messages import SERVER_MESSAGE


class Socket:
    """A client websocket with bounded reads that keeps every text frame it received."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.texts: list[str] = []

    async def next(self, timeout: float = 5.0) -> dict[str, Any]:
        """The next JSON message (protocol pings are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            msg = await self.ws.receive(timeout=max(0.01, deadline - time.monotonic()))
            if msg.type in (WSMsgType.PING, WSMsgType.PONG):
                continue
            assert msg.type == WSMsgType.TEXT, f"expected a message, got {msg.type} {msg.data!r} {msg.extra!r}"
            self.texts.append(msg.data)
            SERVER_MESSAGE.validate_json(msg.data)  # every frame is a declared message
            return json.loads(msg.data)

    async def event(self, name: str, timeout: float = 5.0) -> dict[str, Any]:
        """The next event called ``name``, skipping others."""
        deadline = time.monotonic() + timeout
        while True:
            message = await self.next(max(0.01, deadline - time.monotonic()))
            if message["type"] == "event" and message["name"] == name:
                return message

    async def events_until(self, seq: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Every event up to and including ``seq``."""
        out: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while not out or out[-1]["seq"] < seq:
            message = await self.next(max(0.01, deadline - time.monotonic()))
            if message["type"] == "event":
                out.append(message)
        return out

    async def quiet(self, seconds: float) -> list[dict[str, Any]]:
        """Whatever messages arrive within ``seconds`` (usually expected to be none)."""
        out = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                out.append(await self.next(left))
            except asyncio.TimeoutError:
                break
        return out

    async def close_code(self, timeout: float = 5.0) -> int | None:
        """Read until the server closes the socket; its close code."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                msg = await self.ws.receive(timeout=max(0.01, deadline - time.monotonic()))
            except aiohttp.ClientConnectionResetError:
                if time.monotonic() > deadline:
                    raise
                continue  # answering a ping raced the close; the close frame is still to be read
            if msg.type == WSMsgType.CLOSE:
                return msg.data  # the server's code (close_code may say 1006 if our reply failed)
            if msg.type in (WSMsgType.CLOSED, WSMsgType.CLOSING, WSMsgType.ERROR):
                return self.ws.close_code
            if msg.type == WSMsgType.TEXT:
                self.texts.append(msg.data)

    def raw(self) -> str:
        """Every text frame received so far, joined."""
        return "\n".join(self.texts)


async def open_socket(session: Any, url: str, **kwargs: Any) -> tuple[Socket, dict, dict]:
    """Connect, and read hello and the message after it (snapshot or first replayed event)."""
    kwargs.setdefault("autoclose", False)  # so a server close is read as its code, never a failed reply
    sock = Socket(await session.ws_connect(url, **kwargs))
    hello = await sock.next()
    assert hello["type"] == "hello"
    return sock, hello, await sock.next()
