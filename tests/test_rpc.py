"""ErpRpc routing against real Redis (single server and 3-master cluster), without websockets.

Each ``ErpRpc`` built here plays one coordinator process; a ``MemoryHub`` stands in for its
hub.py: it "delivers" an RPC to a terminal connected to that process by asking a responder
function, and feeds the answer back through that same process's ``on_reply``, as the websocket
receive loop does.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Awaitable, Callable

import pytest

from coordinator.core.errors import ErpUnreachable, LockConflict, NotFound, StaleVersion
from coordinator.realtime.erp_answers import erp_error
from coordinator.realtime.liveness import MasterRegistry
from coordinator.realtime.pubsub import Subscriber
from coordinator.realtime.rpc import ErpRpc
from coordinator.store import keys
from coordinator.store.auth import Principal
from coordinator.store.redis_conn import subscriber_urls

Responder = Callable[[dict[str, Any]], Awaitable[dict[str, Any] | None]]

ORDER = {
    "order_id": "o1", "table_id": "T1", "version": 3, "status": "open", "total_cents": 1800,
    "items": [{"line_id": "l1", "sku": "tea", "name": "茶", "qty": 2, "unit_price_cents": 900, "source": "erp"}],
}


class MemoryHub:
    """hub.py's ``send_to_terminal`` for one simulated process: terminals answer through ``responders``."""

    def __init__(self) -> None:
        self.rpc: ErpRpc | None = None
        self.responders: dict[tuple[str, str], tuple[Principal, Responder]] = {}
        self.sent: list[dict[str, Any]] = []
        self._tasks: set[asyncio.Task] = set()

    async def send_to_terminal(self, store_id: str, terminal_id: str, message: dict[str, Any]) -> bool:
        entry = self.responders.get((store_id, terminal_id))
        if entry is None:
            return False
        self.sent.append(message)
        task = asyncio.create_task(self._answer(*entry, message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _answer(self, principal: Principal, responder: Responder, message: dict[str, Any]) -> None:
        reply = await responder(message)
        if reply is not None:
            await self.rpc.on_reply(principal, reply)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def master(store_id: str, terminal_id: str = "M1") -> Principal:
    """A master terminal's Principal."""
    return Principal(role="erp", store_id=store_id, terminal_id=terminal_id, name="收银台", master=True)


def answering(result: Any, delay: float = 0.0) -> Responder:
    """A responder that answers every RPC with ``result`` (after ``delay`` seconds)."""

    async def respond(message: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(delay)
        return {"type": "rpc_result", "id": message["id"], "result": result}

    return respond


def refusing(code: str, message: str = "refused") -> Responder:
    """A responder that answers every RPC with ``rpc_error`` ``code``."""

    async def respond(msg: dict[str, Any]) -> dict[str, Any]:
        return {"type": "rpc_error", "id": msg["id"], "error": {"code": code, "message": message}}

    return respond


async def silent(message: dict[str, Any]) -> None:
    """A responder that never answers."""
    return None


class Cluster:
    """Simulated coordinator processes on one Redis."""

    def __init__(self, redis: Any, url: str) -> None:
        self.redis = redis
        self.url = url
        self.procs: list[tuple[ErpRpc, MemoryHub]] = []
        self.subscribers: list[Subscriber] = []

    async def clock(self) -> int:
        seconds, micros = await self.redis.time()
        return seconds * 1000 + micros // 1000

    async def process(self) -> tuple[ErpRpc, MemoryHub]:
        hub = MemoryHub()
        subscriber = Subscriber(subscriber_urls(self.url, self.redis))
        rpc = ErpRpc(self.redis, subscriber=subscriber, terminals=hub, masters=MasterRegistry(self.redis, self.clock))
        hub.rpc = rpc
        await subscriber.start()
        await rpc.masters.start()
        assert rpc._subscribed.is_set()
        self.subscribers.append(subscriber)
        self.procs.append((rpc, hub))
        return rpc, hub

    async def connect(self, proc: tuple[ErpRpc, MemoryHub], principal: Principal, responder: Responder,
                      conn_id: str = "c1") -> None:
        rpc, hub = proc
        hub.responders[(principal.store_id, principal.terminal_id)] = (principal, responder)
        await rpc.terminal_connected(principal, conn_id)

    async def close(self) -> None:
        for rpc, hub in self.procs:
            await hub.close()
            await rpc.close()
            await rpc.masters.stop()
        for subscriber in self.subscribers:
            await subscriber.stop()


@pytest.fixture
async def procs(redis_client, redis_url):
    """Factory of simulated coordinator processes sharing the test Redis."""
    cluster = Cluster(redis_client, redis_url)
    yield cluster
    await cluster.close()


async def test_call_is_routed_to_the_process_holding_the_master(procs, uid):
    """An RPC from process B reaches the master connected to process A and B gets its validated result."""
    a, b = await procs.process(), await procs.process()
    await procs.connect(a, master(uid), answering(ORDER))
    result = await b[0].call(uid, "order.fetch", {"order_id": "o1"}, 2000)
    assert result["order_id"] == "o1" and result["version"] == 3
    [sent] = a[1].sent
    assert sent["type"] == "rpc" and sent["method"] == "order.fetch" and sent["params"] == {"order_id": "o1"}
    assert isinstance(sent["id"], str) and len(sent["id"]) >= 16
    assert not a[0]._pending and not b[0]._pending and not a[0]._routes


async def test_call_to_a_master_in_the_same_process_is_answered(procs, uid):
    """An RPC whose master socket is in the calling process is delivered and answered locally."""
    a = await procs.process()
    await procs.connect(a, master(uid), answering({"items": [{"sku": "tea", "name": "茶", "unit_price_cents": 900}]}))
    menu = await a[0].call(uid, "menu.list", {}, 2000)
    assert menu == {"items": [{"sku": "tea", "name": "茶", "unit_price_cents": 900}]}


async def test_no_master_is_unreachable_at_once(procs, uid):
    """With no master connected anywhere the call fails with ERP_UNREACHABLE without waiting for the timeout."""
    a = await procs.process()
    started = time.monotonic()
    with pytest.raises(ErpUnreachable) as caught:
        await a[0].call(uid, "order.fetch", {"order_id": "o1"}, 3000)
    assert time.monotonic() - started < 1.0
    assert caught.value.details[0]["reason"] == "no_master"
    assert caught.value.status == 503 and caught.value.message == "获取订单失败,请到前台结账"


async def test_secondary_terminals_are_never_asked(procs, uid):
    """A connected non-master terminal is not registered, so the call is ERP_UNREACHABLE."""
    a = await procs.process()
    waiter = Principal(role="erp", store_id=uid, terminal_id="W1", name="服务员", master=False)
    await procs.connect(a, waiter, answering(ORDER))
    with pytest.raises(ErpUnreachable):
        await a[0].call(uid, "order.fetch", {"order_id": "o1"}, 500)
    assert a[1].sent == []


async def test_silent_master_times_out_within_the_bound(procs, uid):
    """A master that never answers makes the call fail with ERP_UNREACHABLE at timeout_ms, not later."""
    a, b = await procs.process(), await procs.process()
    await procs.connect(a, master(uid), silent)
    started = time.monotonic()
    with pytest.raises(ErpUnreachable) as caught:
        await b[0].call(uid, "order.fetch", {"order_id": "o1"}, 300)
    elapsed = time.monotonic() - started
    assert 0.29 <= elapsed < 0.8
    assert caught.value.details[0]["reason"] == "timeout"
    assert not b[0]._pending


async def test_late_answer_is_ignored_and_routes_are_forgotten(procs, uid):
    """An answer that arrives after the caller gave up is dropped, and the owner forgets the route."""
    a, b = await procs.process(), await procs.process()
    await procs.connect(a, master(uid), answering(ORDER, delay=0.4))
    with pytest.raises(ErpUnreachable):
        await b[0].call(uid, "order.fetch", {"order_id": "o1"}, 200)
    await asyncio.sleep(0.6)  # the late answer has been forwarded to B and dropped there
    assert not b[0]._pending and not a[0]._routes
    # The next call is unaffected by the stale answer.
    a[1].responders[(uid, "M1")] = (master(uid), answering(ORDER))
    assert (await b[0].call(uid, "order.fetch", {"order_id": "o1"}, 2000))["version"] == 3


async def test_owner_forgets_an_unanswered_route_after_the_deadline(procs, uid):
    """The owning process drops the route of an RPC nobody answered shortly after the caller's deadline."""
    a, b = await procs.process(), await procs.process()
    await procs.connect(a, master(uid), silent)
    with pytest.raises(ErpUnreachable):
        await b[0].call(uid, "order.fetch", {"order_id": "o1"}, 200)
    assert len(a[0]._routes) == 1
    await asyncio.sleep(1.3)
    assert not a[0]._routes


async def test_erp_refusal_of_add_items_is_the_h5_payment_locked_error(procs, uid):
    """PAYMENT_LOCKED from the ERP for order.add_items becomes 409 PAYMENT_LOCKED with the H5 message."""
    a, b = await procs.process(), await procs.process()
    await procs.connect(a, master(uid), refusing("PAYMENT_LOCKED"))
    with pytest.raises(LockConflict) as caught:
        await b[0].call(uid, "order.add_items", {"order_id": "o1", "table_id": "T1", "items": [], "request_id": "r"}, 2000)
    error = caught.value
    assert error.status == 409 and error.code == "PAYMENT_LOCKED" and not error.force_allowed
    assert error.message == "订单正在其他机器/顾客端进行支付,请稍后再试"


async def test_erp_refusal_codes_map_to_coordinator_errors(procs, uid):
    """SPEC codes from the ERP map to the same coordinator errors; unknown codes are ERP_UNREACHABLE with details."""
    a = await procs.process()
    await procs.connect(a, master(uid), refusing("NOT_FOUND"))
    with pytest.raises(NotFound):
        await a[0].call(uid, "order.fetch", {"order_id": "zz"}, 2000)
    a[1].responders[(uid, "M1")] = (master(uid), refusing("CARD_DECLINED", "卡被拒"))
    with pytest.raises(ErpUnreachable) as caught:
        await a[0].call(uid, "order.pay", {"order_id": "o1"}, 2000)
    assert caught.value.details[0] == {"reason": "erp_error", "method": "order.pay",
                                       "erp_code": "CARD_DECLINED", "erp_message": "卡被拒"}
    assert caught.value.erp_code == "CARD_DECLINED"


def test_erp_error_keeps_a_valid_order_and_drops_a_malformed_error():
    """STALE_VERSION carries the ERP's order when it validates; an error object without a code is a bad reply."""
    stale = erp_error("order.pay", {"code": "STALE_VERSION", "message": "newer", "order": {**ORDER, "version": 4}})
    assert isinstance(stale, StaleVersion) and stale.order["version"] == 4 and stale.erp_code == "STALE_VERSION"
    bad = erp_error("order.pay", {"message": "no code"})
    assert isinstance(bad, ErpUnreachable) and bad.details[0]["reason"] == "bad_reply"
    fenced = erp_error("order.pay", {"code": "STALE_FENCE", "message": "fence 3 < 5"})
    assert fenced.code == "LOCK_LOST"


async def test_malformed_result_is_unreachable_not_a_crash(procs, uid):
    """A result that does not validate as the method's model is ERP_UNREACHABLE (bad_reply)."""
    a, b = await procs.process(), await procs.process()
    await procs.connect(a, master(uid), answering({"order_id": "o1", "version": "many"}))
    with pytest.raises(ErpUnreachable) as caught:
        await b[0].call(uid, "order.fetch", {"order_id": "o1"}, 2000)
    assert caught.value.details[0]["reason"] == "bad_reply"


async def test_answer_from_another_terminal_is_ignored(procs, uid):
    """Only the terminal an RPC was sent to may answer it; a forged answer from another terminal is dropped."""
    a, b = await procs.process(), await procs.process()
    impostor = Principal(role="erp", store_id=uid, terminal_id="W9", name="x", master=False)

    async def forge(message: dict[str, Any]) -> None:
        await a[0].on_reply(impostor, {"type": "rpc_result", "id": message["id"], "result": ORDER})

    await procs.connect(a, master(uid), forge)
    with pytest.raises(ErpUnreachable) as caught:
        await b[0].call(uid, "order.fetch", {"order_id": "o1"}, 400)
    assert caught.value.details[0]["reason"] == "timeout"


async def test_stale_registry_entries_are_pruned_and_skipped(procs, uid):
    """An entry of a process that stopped heartbeating is removed and never asked."""
    a, b = await procs.process(), await procs.process()
    await procs.connect(a, master(uid), answering(ORDER))
    now = await procs.clock()
    ghost = "ghost-1|M1|c9"
    await procs.redis.zadd(keys.erp_masters(uid), {ghost: now - b[0].masters.stale_ms - 1000})
    assert (await b[0].call(uid, "order.fetch", {"order_id": "o1"}, 2000))["version"] == 3
    assert await procs.redis.zscore(keys.erp_masters(uid), ghost) is None


async def test_not_delivered_moves_on_to_the_next_master_socket(procs, uid):
    """A process whose hub no longer has the socket answers nack at once and the next master socket is asked."""
    a, b, c = await procs.process(), await procs.process(), await procs.process()
    await procs.connect(a, master(uid, "M1"), answering(ORDER), conn_id="ca")
    await procs.connect(c, master(uid, "M2"), answering({**ORDER, "version": 7}), conn_id="cc")
    del a[1].responders[(uid, "M1")]  # registered, but the socket is gone from A's hub
    now = await procs.clock()
    await procs.redis.zadd(keys.erp_masters(uid), {f"{a[0].process_id}|M1|ca": now, f"{c[0].process_id}|M2|cc": now - 1000})
    started = time.monotonic()
    result = await b[0].call(uid, "order.fetch", {"order_id": "o1"}, 3000)
    assert result["version"] == 7 and time.monotonic() - started < 1.0
    assert len(c[1].sent) == 1


async def test_freshest_master_socket_is_asked_first(procs, uid):
    """With two registered master sockets, the one with the latest heartbeat gets the call."""
    a, b = await procs.process(), await procs.process()
    await procs.connect(a, master(uid, "M1"), answering({**ORDER, "version": 1}), conn_id="ca")
    await procs.connect(b, master(uid, "M2"), answering({**ORDER, "version": 2}), conn_id="cb")
    now = await procs.clock()
    await procs.redis.zadd(keys.erp_masters(uid), {f"{a[0].process_id}|M1|ca": now - 2000, f"{b[0].process_id}|M2|cb": now})
    assert (await a[0].call(uid, "order.fetch", {"order_id": "o1"}, 2000))["version"] == 2


async def test_disconnect_fails_the_waiting_call_at_once(procs, uid):
    """When the master's socket closes while an RPC waits on it, the caller gets ERP_UNREACHABLE immediately."""
    a, b = await procs.process(), await procs.process()
    await procs.connect(a, master(uid), silent)
    call = asyncio.create_task(b[0].call(uid, "order.pay", {"order_id": "o1"}, 5000))
    for _ in range(100):
        if a[0]._routes:
            break
        await asyncio.sleep(0.01)
    started = time.monotonic()
    await a[0].terminal_disconnected(master(uid), "c1")
    with pytest.raises(ErpUnreachable) as caught:
        await asyncio.wait_for(call, 2)
    assert time.monotonic() - started < 1.0
    assert caught.value.details[0]["reason"] == "disconnected"
    assert await procs.redis.zcard(keys.erp_masters(uid)) == 0


async def test_heartbeat_refreshes_the_registry(procs, uid):
    """The heartbeat moves a live socket's score to the Redis clock's now and keeps the key alive."""
    a = await procs.process()
    await procs.connect(a, master(uid), answering(ORDER))
    member = f"{a[0].process_id}|M1|c1"
    await procs.redis.zadd(keys.erp_masters(uid), {member: 1})
    await a[0].masters.heartbeat()
    assert await procs.redis.zscore(keys.erp_masters(uid), member) >= await procs.clock() - 1000
    assert 0 < await procs.redis.pttl(keys.erp_masters(uid)) <= a[0].masters.stale_ms * 4


async def test_close_withdraws_sockets_and_fails_calls_in_flight(procs, uid):
    """Closing a process removes its master sockets from the registry and ends its waiting calls."""
    a, b = await procs.process(), await procs.process()
    await procs.connect(b, master(uid), silent)
    call = asyncio.create_task(a[0].call(uid, "order.fetch", {"order_id": "o1"}, 5000))
    await asyncio.sleep(0.1)
    await a[0].close()
    with pytest.raises(ErpUnreachable):
        await asyncio.wait_for(call, 2)
    await b[0].close()
    assert await procs.redis.zcard(keys.erp_masters(uid)) == 0


async def test_unknown_method_is_a_programming_error(procs, uid):
    """Calling a method the protocol does not define raises ValueError before anything is sent."""
    a = await procs.process()
    with pytest.raises(ValueError):
        await a[0].call(uid, "order.delete", {}, 100)
