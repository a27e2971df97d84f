"""Closed-loop load generators for the lock-cycle benches (P1, P5): one function per system.

Each generator runs ``len(clients)`` concurrent clients in one process (over HTTP, websocket commands,
straight Lua on Redis, or etcd's lock API); a client repeats
"acquire a payment lock on one of its orders, release it" until the window closes. Clients own
disjoint orders, so every acquire is granted and the figure is the cost of the cycle, not of
contention. Processes synchronise on the wall clock: warm-up from ``start_at`` for ``warmup``
seconds, then the measured window of ``duration`` seconds. A cycle counts when it ends inside the
window. Each generator returns its counts, latencies and its own CPU time over the window, so the
caller can tell whether the load generator was the bottleneck.

``run_worker`` is the entry point for ``ProcessPoolExecutor`` (it must be importable).
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
from typing import Any, Awaitable, Callable

import aiohttp

# A client: (bearer token or "", its orders). The coordinator needs the token; the others do not.
Client = tuple[str, list[str]]
Cycle = Callable[[int, str], Awaitable[bool]]

FLOOR_ACQUIRE = """
-- KEYS[1] lock key  KEYS[2] fence counter of the order  ARGV[1] token  ARGV[2] ttl ms
-- Returns the new fence, or 0 when the lock is held.
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local fence = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return fence
"""

FLOOR_RELEASE = """
-- KEYS[1] lock key  ARGV[1] token.  Returns 1 when the token held the lock and it was deleted.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

_TIMEOUT = aiohttp.ClientTimeout(total=10)


async def _drive(clients: list[Client], cycle_for: Callable[[int], Cycle], start_at: float, warmup: float,
                 duration: float) -> dict[str, Any]:
    t_start = start_at + warmup
    t_end = t_start + duration
    latencies: list[float] = []
    errors = 0
    cpu: list[float] = []

    async def meter() -> None:
        await asyncio.sleep(max(0.0, t_start - time.time()))
        cpu.append(time.process_time())
        await asyncio.sleep(max(0.0, t_end - time.time()))
        cpu.append(time.process_time())

    async def client(index: int, orders: list[str]) -> None:
        nonlocal errors
        cycle = cycle_for(index)
        i = 0
        hard_stop = t_end + 30
        while True:
            now = time.time()
            if now >= t_end or now >= hard_stop:
                return
            order = orders[i % len(orders)]
            i += 1
            t0 = time.perf_counter()
            try:
                ok = await cycle(index, order)
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError, KeyError) as exc:
                ok = False
                if errors < 3:
                    print(f"loadgen: {type(exc).__name__}: {exc}", flush=True)
            t1 = time.perf_counter()
            if not ok:
                errors += 1
                continue
            if t_start <= time.time() <= t_end:
                latencies.append((t1 - t0) * 1000)

    await asyncio.sleep(max(0.0, start_at - time.time()))
    metering = asyncio.create_task(meter())
    await asyncio.gather(*(client(i, orders) for i, (_, orders) in enumerate(clients)))
    await metering
    return {"cycles": len(latencies), "latencies": latencies, "errors": errors,
            "cpu": (cpu[1] - cpu[0]) / duration, "duration": duration}


def _store_of(token: str) -> str:
    """The store of a terminal token (``erp~<store>~<terminal>~<secret>``)."""
    return token.split("~")[1]


async def _open_sockets(session: aiohttp.ClientSession, targets: list[str],
                        clients: list[Client]) -> list[aiohttp.ClientWebSocketResponse]:
    """One websocket per client (its terminal's), past hello and snapshot."""
    sockets = []
    for index, (token, _) in enumerate(clients):
        ws = await session.ws_connect(f"{targets[index % len(targets)]}/api/v1/ws", max_msg_size=0,
                                      protocols=("tablelock.v1", f"bearer.{token}"), autoping=True)
        for _ in range(2):  # hello, snapshot
            await ws.receive_str(timeout=30)
        sockets.append(ws)
    return sockets


async def coordinator_load(targets: list[str], clients: list[Client], start_at: float, warmup: float,
                           duration: float) -> dict[str, Any]:
    """Acquire + release of a payment lock over the HTTP API; client i talks to targets[i % n]."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=_TIMEOUT) as session:
        return await _http_cycles(session, targets, clients, start_at, warmup, duration)


async def coordinator_http_socket_load(targets: list[str], clients: list[Client], start_at: float, warmup: float,
                                       duration: float) -> dict[str, Any]:
    """The HTTP cycle by terminals that also hold their websocket, as real ones do: the events of their
    cycles are delivered to them (read and dropped), so it compares with websocket commands transport
    for transport."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=_TIMEOUT) as session:
        sockets = await _open_sockets(session, targets, clients)

        async def drain(ws: aiohttp.ClientWebSocketResponse) -> None:
            async for _ in ws:
                pass

        readers = [asyncio.create_task(drain(ws)) for ws in sockets]
        try:
            return await _http_cycles(session, targets, clients, start_at, warmup, duration)
        finally:
            for ws in sockets:
                await ws.close()
            await asyncio.gather(*readers, return_exceptions=True)


async def _http_cycles(session: aiohttp.ClientSession, targets: list[str], clients: list[Client], start_at: float,
                       warmup: float, duration: float) -> dict[str, Any]:
    """Acquire + release cycles over HTTP on ``session``; each client in its terminal's store."""
    acquire_body = json.dumps({"kind": "payment"}).encode()

    def cycle_for(index: int) -> Cycle:
        token, _ = clients[index]
        base = f"{targets[index % len(targets)]}/api/v1/stores/{_store_of(token)}/orders/"
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

        async def cycle(_: int, order: str) -> bool:
            async with session.post(f"{base}{order}/locks", data=acquire_body, headers=headers) as r:
                body = await r.read()
                if r.status != 201:
                    return False
            lock_token = json.loads(body)["lock"]["token"]
            release = json.dumps({"token": lock_token}).encode()
            async with session.post(f"{base}{order}/locks/payment/release", data=release, headers=headers) as r:
                body = await r.read()
                return r.status == 200 and json.loads(body)["released"] is True

        return cycle

    return await _drive(clients, cycle_for, start_at, warmup, duration)


async def coordinator_ws_load(targets: list[str], clients: list[Client], start_at: float, warmup: float,
                              duration: float) -> dict[str, Any]:
    """The same cycle as websocket commands (docs/protocol.md A15): one socket per client, lock.acquire
    then lock.release, each awaited for its ``result``; the socket's events are read and passed over."""
    async with aiohttp.ClientSession(timeout=_TIMEOUT) as session:
        sockets = await _open_sockets(session, targets, clients)
        ids = iter(range(1, 1 << 62))

        async def result(ws: aiohttp.ClientWebSocketResponse, ident: int) -> dict[str, Any]:
            while True:
                text = await ws.receive_str(timeout=10)
                if text.startswith('{"type":"result"'):  # events ({"type":"event"...) are not parsed
                    message = json.loads(text)
                    if message["id"] == ident:
                        return message

        def cycle_for(index: int) -> Cycle:
            ws = sockets[index]

            async def cycle(_: int, order: str) -> bool:
                ident = next(ids)
                await ws.send_str(f'{{"id":{ident},"type":"lock.acquire","order_id":"{order}","kind":"payment"}}')
                grant = await result(ws, ident)
                if not grant["success"]:
                    return False
                token = grant["result"]["lock"]["token"]
                ident = next(ids)
                await ws.send_str(f'{{"id":{ident},"type":"lock.release","order_id":"{order}","kind":"payment",'
                                  f'"token":"{token}"}}')
                released = await result(ws, ident)
                return released["success"] and released["result"]["released"] is True

            return cycle

        try:
            return await _drive(clients, cycle_for, start_at, warmup, duration)
        finally:
            for ws in sockets:
                await ws.close()


async def floor_load(redis_url: str, clients: list[Client], start_at: float, warmup: float,
                     duration: float) -> dict[str, Any]:
    """The same cycle as two Lua scripts straight against Redis (redis-py asyncio, hiredis)."""
    from redis.asyncio import Redis

    redis = Redis.from_url(redis_url, max_connections=len(clients) + 4)
    acquire = redis.register_script(FLOOR_ACQUIRE)
    release = redis.register_script(FLOOR_RELEASE)

    async def cycle(_: int, order: str) -> bool:
        token = secrets.token_urlsafe(24)
        key = f"floor:{{bench}}:lock:{order}"
        fence = await acquire(keys=[key, f"floor:{{bench}}:fence:{order}"], args=[token, 180_000])
        if not fence:
            return False
        return await release(keys=[key], args=[token]) == 1

    try:
        return await _drive(clients, lambda _: cycle, start_at, warmup, duration)
    finally:
        await redis.aclose()


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


async def etcd_load(base: str, clients: list[Client], start_at: float, warmup: float,
                    duration: float) -> dict[str, Any]:
    """etcd's lock API over its HTTP gateway: lease grant, lock, unlock, lease revoke."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=_TIMEOUT) as session:

        async def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
            async with session.post(f"{base}/v3/{path}", data=json.dumps(body).encode()) as r:
                reply = json.loads(await r.read())
                if r.status != 200 or "error" in reply:
                    raise ValueError(f"etcd {path} -> {r.status} {reply}")
                return reply

        async def cycle(_: int, order: str) -> bool:
            lease = (await post("lease/grant", {"TTL": 180}))["ID"]
            key = (await post("lock/lock", {"name": _b64(f"bench/{order}"), "lease": lease}))["key"]
            await post("lock/unlock", {"key": key})
            await post("lease/revoke", {"ID": lease})
            return True

        return await _drive(clients, lambda _: cycle, start_at, warmup, duration)


async def open_loop_load(targets: list[str], clients: list[Client], rate: float, start_at: float, warmup: float,
                         duration: float, seed: int = 1) -> dict[str, Any]:
    """P6: acquire + release cycles *arriving* at ``rate`` per second (Poisson), whatever the answers.

    Open loop, so a slow answer does not slow the arrivals (no coordinated omission): each
    request's latency is taken from its scheduled time (the acquire) or its sending (the release,
    sent as soon as the acquire answered). Every cycle takes an order no cycle in flight holds, so
    every acquire is granted; the terminal is the order's owner (``clients``).
    """
    import random
    from collections import deque

    rng = random.Random(seed)
    free = deque((token, order) for token, orders in clients for order in orders)
    rng.shuffle(free)
    acquire_body = json.dumps({"kind": "payment"}).encode()
    t_start, t_end = start_at + warmup, start_at + warmup + duration
    requests: list[float] = []
    cycles: list[float] = []
    counts = {"errors": 0, "starved": 0, "late_ms": 0.0}
    cpu: list[float] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=_TIMEOUT) as session:

        async def one(scheduled: float, token: str, order: str, target: str) -> None:
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
            base = f"{target}/api/v1/stores/bench/orders/{order}"
            measured = t_start <= time.time() <= t_end
            try:
                async with session.post(f"{base}/locks", data=acquire_body, headers=headers) as r:
                    body = await r.read()
                    if r.status != 201:
                        raise ValueError(f"acquire -> {r.status}")
                t1 = time.perf_counter()
                release = json.dumps({"token": json.loads(body)["lock"]["token"]}).encode()
                async with session.post(f"{base}/locks/payment/release", data=release, headers=headers) as r:
                    await r.read()
                    if r.status != 200:
                        raise ValueError(f"release -> {r.status}")
                t2 = time.perf_counter()
                if measured:
                    requests.extend(((t1 - scheduled) * 1000, (t2 - t1) * 1000))
                    cycles.append((t2 - scheduled) * 1000)
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError, KeyError) as exc:
                if counts["errors"] < 3:
                    print(f"loadgen: {type(exc).__name__}: {exc}", flush=True)
                counts["errors"] += 1
            finally:
                free.append((token, order))

        await asyncio.sleep(max(0.0, start_at - time.time()))
        tasks: set[asyncio.Task] = set()
        next_at = time.perf_counter()
        wall_offset = time.time() - time.perf_counter()
        n = 0
        while next_at + wall_offset < t_end:
            delay = next_at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                counts["late_ms"] = max(counts["late_ms"], -delay * 1000)
            if not cpu and time.time() >= t_start:
                cpu.append(time.process_time())
            if free:
                token, order = free.popleft()
                task = asyncio.create_task(one(next_at, token, order, targets[n % len(targets)]))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            else:
                counts["starved"] += 1
            n += 1
            next_at += rng.expovariate(rate)
        cpu.append(time.process_time())
        await asyncio.gather(*tasks)
    return {"requests": requests, "cycles": cycles, "errors": counts["errors"], "starved": counts["starved"],
            "late_ms": counts["late_ms"], "cpu": (cpu[-1] - cpu[0]) / duration if len(cpu) > 1 else 0.0,
            "duration": duration}


def run_open_loop(targets: list[str], clients: list[Client], rate: float, start_at: float, warmup: float,
                  duration: float, seed: int = 1) -> dict[str, Any]:
    """Run ``open_loop_load`` in this (worker) process and return its figures."""
    return asyncio.run(open_loop_load(targets, clients, rate, start_at, warmup, duration, seed))


GENERATORS = {"coordinator": coordinator_load, "coordinator-ws": coordinator_ws_load,
              "coordinator-http+socket": coordinator_http_socket_load, "floor": floor_load, "etcd": etcd_load}


def run_worker(system: str, target: Any, clients: list[Client], start_at: float, warmup: float,
               duration: float) -> dict[str, Any]:
    """Run one generator in this (worker) process and return its figures."""
    return asyncio.run(GENERATORS[system](target, clients, start_at, warmup, duration))
