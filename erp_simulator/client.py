"""The ERP terminal's HTTP calls to the coordinator (SPEC §5, "ERP terminal"), with aiohttp.

Every refusal comes back as ``Refused`` carrying the SPEC error body, so the waiter page can
show ``message`` and, when ``force_allowed``, ask the user and repeat with ``force``.
"""

from __future__ import annotations

from typing import Any

import aiohttp

API = "/api/v1"


def lock_body(kind: str, force: bool, expected_version: int | None, force_unverified: bool) -> dict[str, Any]:
    """The body of a lock request (HTTP, or a ``lock.acquire`` command without its ids)."""
    body: dict[str, Any] = {"kind": kind, "force": force}
    if force_unverified:
        body["force_unverified"] = True  # the cashier confirmed the "cannot verify the payment" warning
    if expected_version is not None:
        body["expected_version"] = expected_version
    return body


class Refused(Exception):
    """The coordinator (or the ERP itself) refused an action: the SPEC error body's fields."""

    def __init__(self, code: str, message: str, message_en: str = "", *, status: int = 409,
                 force_allowed: bool = False, lock: dict | None = None, order: dict | None = None) -> None:
        self.code, self.message, self.message_en = code, message, message_en or message
        self.status, self.force_allowed, self.lock, self.order = status, force_allowed, lock, order
        super().__init__(f"{code}: {self.message_en}")

    @classmethod
    def from_body(cls, status: int, body: Any) -> Refused:
        """Build from an HTTP error response body (anything that is not the SPEC body is UNAVAILABLE)."""
        error = body.get("error") if isinstance(body, dict) else None
        if not isinstance(error, dict) or "code" not in error:
            return cls("UNAVAILABLE", "协调服务暂不可用", "The coordinator is unavailable", status=status)
        return cls(error["code"], error.get("message") or error["code"], error.get("message_en") or "",
                   status=status, force_allowed=bool(error.get("force_allowed")), lock=error.get("lock"),
                   order=error.get("order"))

    def wire(self) -> dict[str, Any]:
        """The SPEC error object (what the waiter page receives)."""
        return {"code": self.code, "message": self.message, "message_en": self.message_en,
                "force_allowed": self.force_allowed, "lock": self.lock, "order": self.order}


class CoordinatorClient:
    """One terminal's authenticated HTTP session with the coordinator."""

    def __init__(self, base_url: str, store_id: str, token: str, *, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.store_id = store_id
        self._session = aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {token}"},
            timeout=aiohttp.ClientTimeout(total=timeout),
        )

    async def close(self) -> None:
        """Close the HTTP session."""
        await self._session.close()

    async def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """``method`` the store's ``path`` (``/orders/o1/check``) with ``body``; the answer, or Refused."""
        return await self._call(method, path, body)

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        url = f"{self.base_url}{API}/stores/{self.store_id}{path}"
        try:
            async with self._session.request(method, url, json=body) as response:
                try:
                    payload = await response.json(content_type=None)
                except ValueError:
                    payload = None
                if response.status >= 400:
                    raise Refused.from_body(response.status, payload)
                return payload or {}
        except (aiohttp.ClientError, TimeoutError) as e:
            raise Refused("UNAVAILABLE", "无法连接协调服务", f"Cannot reach the coordinator: {e}", status=503) from e

    async def put_order(self, order: dict[str, Any]) -> dict[str, Any]:
        """Push the ERP's order (``PUT .../orders/{o}``); returns the stored order."""
        return (await self._call("PUT", f"/orders/{order['order_id']}", order))["order"]

    async def get_order(self, order_id: str) -> dict[str, Any]:
        """``{order, locks}`` as the coordinator has them."""
        return await self._call("GET", f"/orders/{order_id}")

    async def locks(self) -> list[dict[str, Any]]:
        """Every live lock of the store (the polling form)."""
        return (await self._call("GET", "/locks"))["locks"]

    async def take_lock(self, order_id: str, kind: str, *, force: bool = False,
                        expected_version: int | None = None, force_unverified: bool = False) -> dict[str, Any]:
        """Take a lock; returns the lock with its token and ``enforced`` (false in legacy mode: nothing stored)."""
        body = lock_body(kind, force, expected_version, force_unverified)
        grant = await self._call("POST", f"/orders/{order_id}/locks", body)
        return {**grant["lock"], "enforced": grant.get("enforced", True)}

    async def renew(self, order_id: str, kind: str, token: str) -> dict[str, Any]:
        """Renew a lock; raises Refused(LOCK_LOST) when it is gone."""
        return (await self._call("POST", f"/orders/{order_id}/locks/{kind}/renew", {"token": token}))["lock"]

    async def release(self, order_id: str, kind: str, token: str) -> bool:
        """Release a lock; False when the token held nothing."""
        return bool((await self._call("POST", f"/orders/{order_id}/locks/{kind}/release", {"token": token}))["released"])

    async def check(self, order_id: str, action: str) -> dict[str, Any]:
        """``{allowed, code, message, message_en, force_allowed}`` for ``action`` on the order now."""
        return await self._call("POST", f"/orders/{order_id}/check", {"action": action})

    async def pay(self, order_id: str, *, token: str, amount_cents: int, version: int, payment_ref: str) -> dict[str, Any]:
        """Complete this terminal's own payment with its payment lock token; returns the paid order."""
        body = {"token": token, "amount_cents": amount_cents, "version": version, "payment_ref": payment_ref}
        return (await self._call("POST", f"/orders/{order_id}/payments", body))["order"]

    async def claim_share(self, order_id: str, share: dict[str, Any], *,
                          expected_version: int | None = None) -> dict[str, Any]:
        """Take a split-bill share (e.g. ``{"rest": True}``) under a payment lock of its own; the lock with token."""
        body: dict[str, Any] = {"share": share}
        if expected_version is not None:
            body["expected_version"] = expected_version
        return (await self._call("POST", f"/orders/{order_id}/shares", body))["lock"]

    async def pay_share(self, order_id: str, *, token: str, amount_cents: int, version: int,
                        payment_ref: str) -> dict[str, Any]:
        """Pay this terminal's own share at the till; returns the order (paid once shares reach the total)."""
        body = {"token": token, "amount_cents": amount_cents, "version": version, "payment_ref": payment_ref}
        return (await self._call("POST", f"/orders/{order_id}/shares/payments", body))["order"]

    # --- SPEC §11: table operations and service requests -------------------------------------

    async def move(self, order_id: str, to_table_id: str, *, force: bool = False) -> dict[str, Any]:
        """Move the order to another table (换桌); ``{order, locks, refund_tasks}``."""
        return await self._call("POST", f"/orders/{order_id}/move", {"to_table_id": to_table_id, "force": force})

    async def merge(self, order_id: str, from_order_ids: list[str], *, force: bool = False) -> dict[str, Any]:
        """Fold other orders into this one (并桌); ``{order, locks, refund_tasks}``."""
        return await self._call("POST", f"/orders/{order_id}/merge", {"from_order_ids": from_order_ids, "force": force})

    async def service_requests(self) -> list[dict[str, Any]]:
        """The store's recent service requests, newest first."""
        return (await self._call("GET", "/service-requests"))["requests"]

    async def take_service_request(self, request_id: str) -> dict[str, Any]:
        """Take a diner's service request; Refused ALREADY_TAKEN (naming the waiter) if another was first."""
        return (await self._call("POST", f"/service-requests/{request_id}/take"))["request"]
