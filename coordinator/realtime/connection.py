"""One websocket of the hub: who is on it and how messages reach it, at no cost while it is idle.

A message for a connection with nothing pending is written at once: aiohttp's send, run for one
step by hand (``_write_now``), puts the frame in the transport's buffer and returns. It only
suspends to wait for a paused transport (a peer that reads slowly) to drain: then, and only then,
the connection gets a writer task and a deque outbox; everything after goes to the outbox, in
order, and the writer writes it, then ends and drops the outbox once it is empty. So an idle
connection holds no task, no queue, no future, and the writer, while it exists, is the only code
writing to the socket. Before ``start`` (hello and replay or snapshot being sent by the session)
live messages wait in the outbox. An outbox holding ``queue_size`` messages refuses the next one
(``OutboxFull``): the hub closes that socket with 1013.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

from aiohttp import web

from coordinator.store.auth import Principal

log = logging.getLogger(__name__)

#: Outbox marker: send a protocol ping.
PING = "__ping__"

Spawn = Callable[..., asyncio.Task]


class OutboxFull(Exception):
    """The connection has ``queue_size`` messages pending: its client cannot keep up."""


class Connection:
    """One websocket: who is on it, its pending messages and, only while they are pending, its writer."""

    # Thousands of these live in a process: no per-instance dict.
    __slots__ = ("broken", "close_code", "closing", "conn_id", "outbox", "principal", "queue_size", "sent_seq",
                 "started", "token", "transport", "writer", "ws")

    def __init__(self, ws: web.WebSocketResponse, principal: Principal, token: str | None, queue_size: int,
                 transport: asyncio.BaseTransport | None = None) -> None:
        self.ws = ws
        self.principal = principal
        self.token = token
        self.transport = transport
        self.conn_id = secrets.token_hex(8)
        #: Bound on ``outbox``: one more pending message is OutboxFull.
        self.queue_size = queue_size
        #: Messages not yet written, oldest first; None while nothing is pending (the idle case).
        self.outbox: deque[tuple[int | None, str]] | None = None
        #: Highest event seq this client has (from the snapshot/replay, then live).
        self.sent_seq = 0
        #: The task draining ``outbox``; None whenever nothing waits on a slow peer.
        self.writer: asyncio.Task | None = None
        self.started = False
        self.closing = False
        self.close_code: int | None = None
        #: A write failed: the socket is gone (its reader sees it too); nothing more is written.
        self.broken = False

    @property
    def store_id(self) -> str:
        """The store this socket watches."""
        return self.principal.store_id or ""

    @property
    def staff(self) -> bool:
        """True for an ERP terminal (whole store), False for an H5 session (one table)."""
        return self.principal.role == "erp"

    @property
    def client_id(self) -> str:
        """The terminal id (ERP) or session id (H5) of the client."""
        return (self.principal.terminal_id if self.staff else self.principal.session_id) or ""

    def __repr__(self) -> str:
        return f"<Connection {self.conn_id} {self.principal.role} {self.store_id}/{self.client_id}>"

    # --- writing ----------------------------------------------------------------------------

    def offer(self, seq: int | None, text: str, spawn: Spawn) -> bool:
        """Write ``text`` (event ``seq``, or None) now or after what is pending; False once closing or broken.

        ``spawn`` starts the writer task when the peer is slow. Raises OutboxFull.
        """
        if self.closing or self.broken:
            return False
        outbox = self.outbox
        if outbox is None:
            if self.started:
                self._write_now(seq, text, spawn)
                return True
            outbox = self.outbox = deque()
        if len(outbox) >= self.queue_size:
            raise OutboxFull()
        outbox.append((seq, text))
        return True

    def start(self, spawn: Spawn) -> None:
        """Go live: write, in order, the messages that waited for the hello and snapshot."""
        self.started = True
        pending, self.outbox = self.outbox, None
        while pending and self.writer is None and not self.broken:
            seq, text = pending.popleft()
            self._write_now(seq, text, spawn)
        if pending and self.outbox is not None:
            self.outbox.extend(pending)  # the writer that just started has the rest

    async def stop_writer(self) -> None:
        """Cancel the writer, if there is one, and wait for it."""
        writer = self.writer
        if writer is not None:
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
            self.writer = None

    def _write_now(self, seq: int | None, text: str, spawn: Spawn) -> None:
        """Write one message with nothing pending before it; a writer task takes over if the write must wait."""
        if seq is not None:
            if seq <= self.sent_seq:
                return  # already in the snapshot or replay
            self.sent_seq = seq
        send = self.ws.ping() if text is PING else self.ws.send_str(text)
        try:
            # aiohttp's send (uncompressed) only suspends on a paused transport: take its first step here.
            waiting = send.send(None)
        except StopIteration:
            return
        except Exception as exc:  # noqa: BLE001 - the socket broke under us; the reader sees it too
            log.debug("writing to %r failed: %s", self, exc)
            self.broken = True
            return
        self.outbox = deque()
        self.writer = spawn(self._write(send, waiting), f"tablelock-ws-writer-{self.conn_id}")

    async def _write(self, send: Coroutine[Any, Any, None], waiting: Any) -> None:
        """Finish the suspended ``send``, then drain the outbox; end (dropping the outbox) once it is empty."""
        ws = self.ws
        try:
            await _resume(send, waiting)
            outbox = self.outbox
            while outbox:
                seq, text = outbox.popleft()
                if text is PING:
                    await ws.ping()
                    continue
                if seq is not None:
                    if seq <= self.sent_seq:
                        continue  # already in the snapshot or replay
                    self.sent_seq = seq
                await ws.send_str(text)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the socket broke under us; the reader sees it too
            log.debug("writer of %r stopped: %s", self, exc)
            self.broken = True
        self.outbox = None
        self.writer = None


async def _resume(send: Coroutine[Any, Any, None], waiting: Any) -> None:
    """Run a coroutine that was stepped by hand (``_write_now``) to its end, as a task would.

    ``waiting`` is what it yielded (a future, or None for a bare yield); each time that is done,
    the coroutine takes its next step and sees the future's result or exception itself.
    Cancelled: the coroutine is closed, and the cancellation goes on.
    """
    try:
        while True:
            if waiting is None:
                await asyncio.sleep(0)
            else:
                await asyncio.wait((waiting,))
            try:
                waiting = send.send(None)
            except StopIteration:
                return
    except BaseException:
        send.close()
        raise
