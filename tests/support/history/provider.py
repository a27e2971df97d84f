"""Provider traffic for the history workload (SPEC §9): diners who claim, start a WeChat Pay or
Alipay payment and have the sandbox provider pay it (or fail it) with a random notification mode,
while ERP terminals force and pay the same orders; at the end a bounded quiet period lets the
outbox, poller and refunds settle, then every trade's final state is read from the sandbox and
every payment record from the admin API into the history (``History.trades`` / ``payments``).

The sandbox is a real subprocess (``tests.support.sandbox.start_sandbox``); the coordinators'
notify URLs are their own ports (the launcher sets ``TABLELOCK_PUBLIC_URL``), so a killed
process's notifications are lost for real and the poller of the other process must find them.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp

from tests.support.app import ADMIN_TOKEN
from tests.support.sandbox import SandboxProcess, start_sandbox, stop_sandbox

if TYPE_CHECKING:
    from tests.support.history.workload import Actor, Run

PROVIDERS = ("wechatpay", "alipay")
NOTIFY_MODES = ("normal", "duplicate", "late", "lost")
#: Process env for the coordinators: a lost notification is looked for soon, not after 20 s.
PROCESS_ENV = {"TABLELOCK_PAYMENT_FIRST_QUERY_MS": "2500", "TABLELOCK_PAYMENT_PROVIDER_TIMEOUT_SECONDS": "2"}


class ProviderTraffic:
    """The sandbox provider of one run and the diners' provider payments."""

    def __init__(self, run: Run, data_dir: Path) -> None:
        self.run = run
        self.data_dir = data_dir / "sandbox"
        self.sandbox: SandboxProcess | None = None
        self.http: aiohttp.ClientSession | None = None

    async def setup(self) -> None:
        """Start the sandbox and set both providers up for the store through the admin API."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.sandbox = await asyncio.to_thread(start_sandbox, self.data_dir)
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10),
                                          headers={"Authorization": f"Bearer {self.sandbox.token}"})
        await self._sandbox("POST", "/sandbox/control", {"delay_ms": 1500, "refund_delay_ms": 200})
        for name in PROVIDERS:
            for _ in range(50):
                op = await self.run.api.call("admin", "admin", ADMIN_TOKEN, "PUT",
                                             f"/admin/stores/{self.run.store_id}/payments/providers/{name}",
                                             self.sandbox.credentials[name])
                if op.status == 200:
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError(f"provider {name} not set up: {op.status} {op.resp}")

    async def _sandbox(self, method: str, path: str, body: Any = None) -> tuple[int | None, Any]:
        assert self.http is not None and self.sandbox is not None
        try:
            async with self.http.request(method, self.sandbox.url + path, json=body) as r:
                return r.status, await r.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            return None, repr(exc)

    async def pay(self, actor: Actor, order_id: str, lock: dict[str, Any], *, kind: str = "payment") -> None:
        """Start a provider payment within the claim ``lock`` and have the sandbox pay or fail it.

        ``kind`` "share": the lock is a split-bill share's (SPEC §10); the trade names its fence and share,
        and the diner is quick on the pay sheet (an add-on meanwhile makes the money a surplus).
        """
        provider = random.choice(PROVIDERS)
        op = await actor.call("POST", "/h5/payments/start", {"token": lock["token"], "provider": provider})
        actor.forget(order_id, kind)
        if op.status != 201:
            return
        started = op.resp
        provider = started["provider"]  # a repeated start answers the trade already in flight, whatever was asked
        trade: dict[str, Any] = {"out_trade_no": started["out_trade_no"], "provider": provider, "order_id": order_id,
                                 "amount_cents": started["amount_cents"], "actor": actor.name, "op": op.i,
                                 "t": time.monotonic()}
        if lock.get("share"):
            trade.update(fence=lock["fence"], share=lock["share"])
        self.run.history.trades.append(trade)
        if provider == "alipay" and started.get("pay_url"):
            # An Alipay wap trade exists at the provider once the phone opens the pay URL.
            try:
                assert self.http is not None
                async with self.http.get(started["pay_url"]) as r:
                    await r.read()
            except (aiohttp.ClientError, TimeoutError, OSError):
                pass
        if random.random() < 0.08:
            trade["action"] = "cancel"  # the diner gives up: the provider order is closed first
            await actor.call("POST", "/h5/checkout/cancel", {"token": lock["token"]})
            return
        await asyncio.sleep(random.uniform(0, 0.1))  # the diner on the pay sheet
        body = {"outcome": "paid" if random.random() < 0.85 else "failed", "notify": random.choice(NOTIFY_MODES),
                "delay_ms": random.randint(200, 3000)}
        if kind == "share":
            body.update(notify=random.choice(NOTIFY_MODES[:1] * 4 + NOTIFY_MODES), delay_ms=random.randint(50, 600))
        trade["action"] = f"pay {body['outcome']} notify {body['notify']}"
        status, _ = await self._sandbox("POST", f"/sandbox/trades/{started['out_trade_no']}/pay", body)
        trade["pay_status"] = status

    async def _records(self) -> list[dict[str, Any]] | None:
        op = await self.run.api.call("admin", "admin", ADMIN_TOKEN, "GET", f"/admin/stores/{self.run.store_id}/payments")
        return op.resp["payments"] if op.status == 200 else None

    async def settle(self, seconds: float) -> float:
        """Bounded quiet period: until nothing the provider captured is still moving; the seconds waited.

        Moving: a record completing (outbox), unknown, a refund pending or processing, or in flight
        while the provider already has the money (a lost notification the poller has yet to find).
        A trade the diner never paid (a failed attempt leaves it payable) stays in flight until its
        window ends, and is not waited for.
        """
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            if await self._quiet():
                break
            await asyncio.sleep(0.25)
        return time.monotonic() - started

    async def _quiet(self) -> bool:
        records = await self._records()
        if records is None:
            return False
        for p in records:
            if p["state"] in ("completing", "unknown") or p.get("refund_state") in ("pending", "processing"):
                return False
            if p["state"] == "in_flight":
                status, trade = await self._sandbox("GET", f"/sandbox/trades/{p['out_trade_no']}")
                if status != 200 or trade.get("state") == "paid":
                    return False
        return True

    async def collect(self) -> None:
        """Read every trade's final state from the sandbox and every payment record from the admin API."""
        for trade in self.run.history.trades:
            status, answer = await self._sandbox("GET", f"/sandbox/trades/{trade['out_trade_no']}")
            trade["final"] = answer if status == 200 else None
        self.run.history.payments = await self._records() or []

    async def close(self) -> None:
        """Close the HTTP session and stop the sandbox."""
        if self.http is not None:
            await self.http.close()
        if self.sandbox is not None:
            await asyncio.to_thread(stop_sandbox, self.sandbox.proc)
