"""A Python H5 client: the diner's side of the wire protocol (SPEC §5 H5 endpoints, §7 websocket).

    async with await H5Client.open("http://127.0.0.1:8080", qr_token) as diner:
        table = await diner.table()
        grant = await diner.checkout()                      # {"lock": {..., "token"}, "order"}
        started = await diner.start_payment(grant["lock"]["token"], "wechatpay")  # open started["pay_url"]
        result = await diner.payment_result(started["out_trade_no"], grant["order"]["order_id"])
        async for event in diner.events():                  # resumes after drops via ``since``
            ...

Every refused request raises :class:`H5Error` carrying the SPEC error body. Used by the tests,
load generation and the examples; it speaks exactly what the browser page speaks.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

import aiohttp
from yarl import URL

PREFIX = "/api/v1"

__all__ = ["H5Client", "H5Error"]


class H5Error(Exception):
    """A refused H5 request: ``status`` and the SPEC ``error`` object (code, messages, lock, order…)."""

    def __init__(self, status: int, error: Mapping[str, Any] | None) -> None:
        self.status = status
        self.error: dict[str, Any] = dict(error or {"code": f"HTTP_{status}", "message": "", "message_en": ""})
        self.code: str = self.error.get("code", f"HTTP_{status}")
        self.message: str = self.error.get("message") or ""
        self.message_en: str = self.error.get("message_en") or ""
        self.force_allowed: bool = bool(self.error.get("force_allowed"))
        self.lock: dict[str, Any] | None = self.error.get("lock")
        self.order: dict[str, Any] | None = self.error.get("order")
        self.details: list[Any] | None = self.error.get("details")
        super().__init__(f"{status} {self.code}: {self.message_en or self.message}")


def _items(items: Iterable[Mapping[str, Any] | tuple[str, int]]) -> list[dict[str, Any]]:
    return [dict(i) if isinstance(i, Mapping) else {"sku": i[0], "qty": i[1]} for i in items]


class H5Client:
    """One diner's session on one table."""

    def __init__(self, base_url: str, qr_token: str, http: aiohttp.ClientSession, *, own_http: bool) -> None:
        self.base_url = base_url.rstrip("/")
        self.qr_token = qr_token
        self.http = http
        self._own_http = own_http
        self.session_token: str = ""
        self.store_id: str = ""
        self.table_id: str = ""
        self.expires_at: int = 0
        #: The last event seq seen by :meth:`events` (the ``since`` of the next connection).
        self.seq: int | None = None
        #: How many times :meth:`events` had to open its socket again.
        self.reconnects = 0
        self._ws: aiohttp.ClientWebSocketResponse | None = None

    @classmethod
    async def open(cls, base_url: str, qr_token: str, *, http: aiohttp.ClientSession | None = None) -> "H5Client":
        """Open a session with the table's QR token (POST /h5/sessions)."""
        client = cls(base_url, qr_token, http or aiohttp.ClientSession(), own_http=http is None)
        try:
            await client.reopen()
        except BaseException:
            await client.close()
            raise
        return client

    async def reopen(self) -> None:
        """Open a fresh session from the QR token (a new diner identity on the same table)."""
        body = await self._request("POST", "/h5/sessions", {"qr_token": self.qr_token}, auth=False)
        self.session_token = body["session_token"]
        self.store_id, self.table_id, self.expires_at = body["store_id"], body["table_id"], body["expires_at"]

    async def close(self) -> None:
        """Close the HTTP session if this client opened it."""
        if self._own_http:
            await self.http.close()

    async def __aenter__(self) -> "H5Client":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- HTTP -------------------------------------------------------------------------------

    async def _request(self, method: str, path: str, body: Any = None, *, auth: bool = True) -> Any:
        headers = {"Accept": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.session_token}"
        async with self.http.request(method, self.base_url + PREFIX + path, json=body, headers=headers) as response:
            try:
                payload = await response.json(content_type=None)
            except (json.JSONDecodeError, aiohttp.ContentTypeError, UnicodeDecodeError):
                payload = None
            if response.status >= 400:
                raise H5Error(response.status, payload.get("error") if isinstance(payload, dict) else None)
            return payload

    async def table(self) -> dict[str, Any]:
        """GET /h5/table: {store, table, order|null, locks, config, seq}."""
        return await self._request("GET", "/h5/table")

    async def menu(self) -> list[dict[str, Any]]:
        """GET /h5/menu: the dishes, [{sku, name, unit_price_cents}]."""
        return (await self._request("GET", "/h5/menu"))["items"]

    async def add_items(self, items: Iterable[Mapping[str, Any] | tuple[str, int]],
                        request_id: str | None = None) -> dict[str, Any]:
        """POST /h5/items: add dishes ({sku, qty} or (sku, qty)); returns the order the ERP accepted.

        Pass the same ``request_id`` to retry safely; a new one is drawn when none is given.
        """
        request_id = request_id or "py-" + secrets.token_hex(12)
        body = await self._request("POST", "/h5/items", {"items": _items(items), "request_id": request_id})
        return body["order"]

    async def checkout(self, share: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """POST /h5/checkout: the latest order from the ERP and my payment lock, {lock (with token), order}.

        ``share`` (split bill): ``{"lines": [...]}`` | ``{"parts": n, "part": k}`` | ``{"amount_cents": n}``
        | ``{"rest": true}``; the lock is then my share's own, with ``lock.share.amount_cents`` to pay.
        """
        return await self._request("POST", "/h5/checkout", {"share": dict(share)} if share is not None else None)

    async def service_request(self, kind: str) -> dict[str, Any]:
        """Call a waiter, ask for water or the bill (SPEC §11): ``POST /h5/service-requests``."""
        return (await self._request("POST", "/h5/service-requests", {"kind": kind}))["request"]

    async def cancel(self, token: str) -> bool:
        """POST /h5/checkout/cancel: give my payment lock back; True when something was released."""
        return (await self._request("POST", "/h5/checkout/cancel", {"token": token}))["released"]

    async def start_payment(self, token: str, provider: str = "wechatpay") -> dict[str, Any]:
        """POST /h5/payments/start: open the provider order for my claimed lock.

        Returns ``{out_trade_no, provider, pay_url, amount_cents, expires_at, lock}``: the phone opens
        ``pay_url``; the result comes as events (``order.paid``, ``payment.failed``, ``payment.surplus``).
        """
        return await self._request("POST", "/h5/payments/start", {"token": token, "provider": provider})

    async def payment_result(self, out_trade_no: str, order_id: str, *, since: int | None = None,
                             timeout: float = 30.0) -> dict[str, Any]:
        """Wait for the end of my payment: the ``order.paid``, ``payment.failed`` or ``payment.surplus`` event."""

        async def first() -> dict[str, Any]:
            async for event in self.events(since=since):
                data = event.get("data") or {}
                if event.get("name") == "order.paid" and event.get("order_id") == order_id:
                    return event
                if event.get("name") in ("payment.failed", "payment.surplus") and data.get("out_trade_no") == out_trade_no:
                    return event
            raise H5Error(0, {"code": "DISCONNECTED", "message": "", "message_en": "events ended"})

        return await asyncio.wait_for(first(), timeout)

    # --- websocket --------------------------------------------------------------------------

    def ws_url(self, since: int | None = None) -> str:
        """The websocket URL of this session, resuming after ``since`` (the token goes in ws_protocols)."""
        url = URL(self.base_url + PREFIX + "/ws")
        query = {} if since is None else {"since": str(since)}
        return str(url.with_scheme("wss" if url.scheme == "https" else "ws").with_query(query))

    def ws_protocols(self) -> tuple[str, str]:
        """The subprotocols offered: the coordinator's, and the session token (so it is in no URL or log)."""
        return ("tablelock.v1", f"bearer.{self.session_token}")

    async def events(self, since: int | None = None, *, resume: bool = True, snapshots: bool = False,
                     backoff: tuple[float, float] = (0.2, 5.0)) -> AsyncIterator[dict[str, Any]]:
        """Yield the table's events (and ``snapshot`` messages if asked) as they come.

        After a drop the socket is reopened, after ``backoff[0]`` doubling up to ``backoff[1]``
        seconds, with ``since`` = the last seq seen, so no retained event is lost (SPEC invariant
        5); with ``resume=False`` a drop ends the iteration. Close code 4401 (session lapsed)
        reopens the session from the QR token first.
        """
        self.seq = since
        delay = backoff[0]
        while True:
            try:
                async with self.http.ws_connect(self.ws_url(self.seq), protocols=self.ws_protocols()) as ws:
                    self._ws = ws
                    delay = backoff[0]
                    async for msg in ws:
                        if msg.type is not aiohttp.WSMsgType.TEXT:
                            continue
                        data = json.loads(msg.data)
                        kind = data.get("type")
                        if kind == "hello":
                            if self.seq is None:
                                self.seq = data.get("seq")
                        elif kind == "snapshot":
                            self.seq = data.get("seq", self.seq)
                            if snapshots:
                                yield data
                        elif kind == "event":
                            if self.seq is not None and data["seq"] <= self.seq:
                                continue  # already seen before the reconnect
                            self.seq = data["seq"]
                            yield data
                    close_code = ws.close_code
            except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError):
                close_code = None
            finally:
                self._ws = None
            if not resume:
                return
            if close_code == 4401:
                await self.reopen()
            self.reconnects += 1
            await asyncio.sleep(delay)
            delay = min(backoff[1], delay * 2)

    async def drop(self) -> None:
        """Close the current event socket as a network drop would; ``events()`` reconnects with since."""
        if self._ws is not None:
            await self._ws.close()
