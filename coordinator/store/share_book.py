"""ShareBook: the split-bill scripts (SPEC §10) — claim a share, end it, pay it.

Each share is its own payment lock (fence, token, expiry) in the order's locks hash under
``share:<fence>``; the paid shares and ``paid_cents`` live in the order hash. The rule that
decides a claim is ``core/shares.py claim_share``; ``lua/share_claim.lua`` applies it atomically.
"""

from __future__ import annotations

from typing import Any

from coordinator.core.errors import ValidationFailed
from coordinator.core.rules import Action
from coordinator.core.shares import ShareSpec
from coordinator.store import keys
from coordinator.store.engine import LockEngine, compact


def spec_json(spec: ShareSpec) -> str:
    """The share as share_claim.lua reads it: only the fields of its kind."""
    body: dict[str, Any] = {"kind": spec.kind.value}
    if spec.line_ids:
        body["line_ids"] = list(spec.line_ids)
    if spec.parts or spec.part:
        body["parts"], body["part"] = spec.parts, spec.part
    if spec.amount_cents:
        body["amount_cents"] = spec.amount_cents
    return compact(body)


class ShareBook:
    """Split-bill shares of one Redis, through the lock engine's script plumbing."""

    def __init__(self, engine: LockEngine) -> None:
        self.engine = engine

    async def _call(self, name: str, store_id: str, order_id: str, args: list[Any], actor: dict[str, Any],
                    *, with_config: bool = True, with_open: bool = False) -> dict[str, Any]:
        extra = [keys.order(store_id, order_id), keys.locks(store_id, order_id)]
        if with_open:
            extra += [keys.open_orders(store_id), keys.payment_refs(store_id)]
        if with_config:
            extra.append(keys.config(store_id))
        reply = await self.engine.run(name, store_id, extra, [order_id, *args], actor)
        if reply.get("err") == "VALIDATION_ERROR":
            raise ValidationFailed(details=[{"loc": ["share"], "msg": reply.get("detail", ""), "type": "share"}])
        await self.engine.raise_reply(store_id, reply, actor, Action.PAY)
        return reply

    async def claim(
        self, store_id: str, order_id: str, actor: dict[str, Any], spec: ShareSpec, *,
        expected_version: int | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """Claim a share under a new payment lock; returns (lock with token and share, reused)."""
        reply = await self._call(
            "share_claim", store_id, order_id,
            [spec_json(spec), "" if expected_version is None else expected_version,
             self.engine.new_token(), self.engine.defaults_json],
            actor,
        )
        return reply["lock"], reply["reused"]

    async def end(self, store_id: str, order_id: str, actor: dict[str, Any], token: str, *,
                  failed: bool = False) -> bool:
        """End the actor's share lock (cancelled, or its provider payment failed); False if none was live."""
        reply = await self._call("share_pay", store_id, order_id,
                                 [token, "payment_failed" if failed else "release", 0, 0, "", 0, ""],
                                 actor, with_config=False, with_open=True)
        return reply["released"]

    async def pay(
        self, store_id: str, order_id: str, actor: dict[str, Any], *, token: str, amount_cents: int,
        version: int, payment_ref: str, mode: str, window_ms: int = 0, code: str = "",
    ) -> dict[str, Any]:
        """Capture a share: ``self`` (an ERP terminal's own), ``begin`` / ``paid`` / ``rejected`` (ERP confirms)."""
        return await self._call("share_pay", store_id, order_id,
                                [token, mode, amount_cents, version, payment_ref, window_ms, code],
                                actor, with_config=False, with_open=True)
