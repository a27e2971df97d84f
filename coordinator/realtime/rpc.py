"""ERP RPC across coordinator processes (SPEC §7): ask the store's master terminal, wherever its socket is.

An H5 request may reach any process; the master's websocket lives in one of them. Each process
registers its master sockets in the store's sorted set ``tl:{s}:masters`` (member
``<process_id>|<terminal_id>|<conn_id>``, score = last heartbeat on the Redis clock) and listens
on its own pub/sub channel ``tl:rpc:<process_id>``::

    origin process                              owner process (holds the master's socket)
    call(store, method, params, timeout_ms)
      masters of the store, freshest first
      PUBLISH tl:rpc:<owner> {"k":"req",...}  →  deliver {"type":"rpc",id,method,params} on the socket
                                                 (or {"k":"nack"} back at once: no such socket here)
                                                 … the ERP answers on its socket …
                                                 on_reply(principal, {"type":"rpc_result",id,result})
      resolve the waiting future  ←  PUBLISH tl:rpc:<origin> {"k":"res",id,result}

A call is delivered at most once: only a ``nack`` (certainly not delivered) moves on to the next
master socket; silence is waited out until ``timeout_ms``. Every outcome other than a validated
result is an error: no master, not delivered, no answer in time, a malformed answer
(``ErpUnreachable``), or the ERP's own refusal mapped to the coordinator's error of that code.
A dead process's registry entries stop counting after ``stale_ms`` without a heartbeat.

redis-py's asyncio ``RedisCluster`` has no pub/sub, so the listener is a plain ``Redis`` client on
one node; a cluster forwards PUBLISH to every node, so any node serves.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Sequence
from urllib.parse import urlsplit, urlunsplit

from aiohttp import web
from prometheus_client import Counter, Histogram
from pydantic import BaseModel, ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError

from coordinator import metrics
from coordinator.core.errors import ErpUnreachable, TablelockError
from coordinator.realtime.erp_answers import RESULTS, erp_error, unreachable
from coordinator.services import SERVICES
from coordinator.store import keys
from coordinator.store.engine import compact
from coordinator.store.redis_conn import is_cluster
from coordinator.store.sentinel import subscriber_client

log = logging.getLogger(__name__)

Deliver = Callable[[str, str, dict[str, Any]], Awaitable[bool]]
Clock = Callable[[], Awaitable[int]]

RPC_CALLS = Counter(
    "tablelock_erp_rpc_total", "ERP RPCs by method and outcome", ["method", "outcome"],
    registry=metrics.REGISTRY,
)
RPC_SECONDS = Histogram(
    "tablelock_erp_rpc_seconds", "ERP RPC latency (answered calls)", ["method"], registry=metrics.REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

_SUBSCRIBER_OPTIONS: dict[str, Any] = {
    "protocol": 2, "socket_connect_timeout": 1.0, "socket_timeout": None, "health_check_interval": 10,
}


def _outcome(error: TablelockError) -> str:
    """The metrics label of a failed call: why it was unreachable, or the code it mapped to."""
    if isinstance(error, ErpUnreachable) and error.details:
        return str(error.details[0].get("reason"))  # a bounded set, unlike an ERP's own codes
    return error.code


def subscriber_urls(url: str, redis: Any) -> list[str]:
    """Where the pub/sub listener may connect: ``url``, then (for a cluster) every other node."""
    if not is_cluster(redis):
        return [url]
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    urls = [url]
    for node in redis.get_nodes():
        host = f"[{node.host}]" if ":" in node.host else node.host
        netloc = f"{userinfo}@{host}:{node.port}" if userinfo else f"{host}:{node.port}"
        other = urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
        if other not in urls:
            urls.append(other)
    return urls


@dataclass
class _Route:
    """An RPC this process delivered to a local socket: where its answer must go."""

    origin: str
    store_id: str
    terminal_id: str
    expiry: asyncio.TimerHandle


class ErpRpc:
    """RPC to a store's master ERP terminal from any coordinator process on the same Redis."""

    def __init__(
        self,
        redis: Any,
        *,
        deliver: Deliver,
        subscriber_urls: Sequence[str],
        clock: Clock,
        process_id: str | None = None,
        heartbeat_ms: int = 5_000,
        stale_ms: int = 15_000,
    ) -> None:
        self.redis = redis
        self.process_id = process_id or f"{os.getpid()}-{secrets.token_hex(4)}"
        self.channel = keys.rpc_channel(self.process_id)
        self.heartbeat_ms = heartbeat_ms
        self.stale_ms = stale_ms
        self._deliver = deliver
        self._urls = list(subscriber_urls)
        self._clock = clock
        # On a single server PUBLISH counts the receivers, so 0 means the owner is gone; a cluster
        # counts only the receiving node's subscribers, so there 0 means nothing.
        self._publish_counts = not is_cluster(redis)
        self._subscribed = asyncio.Event()
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}   # origin side, by rpc id
        self._routes: dict[str, _Route] = {}                            # owner side, by rpc id
        self._local: dict[str, tuple[str, str]] = {}                    # conn_id -> (store, terminal)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._listener: asyncio.Task[None] | None = None
        self._heartbeat: asyncio.Task[None] | None = None

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self, ready_timeout: float = 5.0) -> None:
        """Subscribe to this process's channel and start the heartbeat; wait (bounded) until subscribed."""
        self._listener = asyncio.create_task(self._listen(), name=f"rpc-listen-{self.process_id}")
        self._heartbeat = asyncio.create_task(self._beat(), name=f"rpc-heartbeat-{self.process_id}")
        try:
            await asyncio.wait_for(self._subscribed.wait(), ready_timeout)
        except TimeoutError:
            log.warning("rpc: channel %s not subscribed after %.1fs; calls wait for it", self.channel, ready_timeout)

    async def close(self) -> None:
        """Stop listening, fail calls in flight, and withdraw this process's master sockets."""
        tasks = [t for t in (self._listener, self._heartbeat, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for rpc_id, future in list(self._pending.items()):
            if not future.done():
                future.set_result({"k": "gone", "id": rpc_id})
        for route in self._routes.values():
            route.expiry.cancel()
        self._routes.clear()
        local, self._local = self._local, {}
        for conn_id, (store_id, terminal_id) in local.items():
            try:
                await asyncio.wait_for(self.redis.zrem(keys.erp_masters(store_id), self._member(terminal_id, conn_id)), 1.0)
            except (RedisError, OSError, TimeoutError):
                pass  # the entry ages out after stale_ms

    # --- the ERP terminal side (called by the websocket endpoint) -------------------------

    async def terminal_connected(self, principal: Any, conn_id: str) -> None:
        """Register a master terminal's new socket in this process (other terminals are ignored)."""
        if principal.role != "erp" or not principal.master:
            return
        self._local[conn_id] = (principal.store_id, principal.terminal_id)
        try:
            await self._register(principal.store_id, [self._member(principal.terminal_id, conn_id)])
        except (RedisError, OSError) as exc:
            log.warning("rpc: cannot register master socket %s (heartbeat retries): %s", conn_id, exc)

    async def terminal_disconnected(self, principal: Any, conn_id: str) -> None:
        """Withdraw a master socket; calls waiting on that terminal here fail at once."""
        entry = self._local.pop(conn_id, None)
        if entry is None:
            return
        store_id, terminal_id = entry
        try:
            await self.redis.zrem(keys.erp_masters(store_id), self._member(terminal_id, conn_id))
        except (RedisError, OSError) as exc:
            log.warning("rpc: cannot withdraw master socket %s (it ages out): %s", conn_id, exc)
        if entry in self._local.values():
            return  # the terminal still has a socket here; its answer may come on that one
        for rpc_id, route in list(self._routes.items()):
            if (route.store_id, route.terminal_id) == entry:
                self._drop_route(rpc_id)
                await self._answer(route.origin, {"k": "gone", "id": rpc_id})

    async def on_reply(self, principal: Any, message: Any) -> None:
        """Take an ERP terminal's ``rpc_result`` / ``rpc_error`` and send it to the waiting process."""
        if isinstance(message, BaseModel):
            message = message.model_dump(mode="json")
        if not isinstance(message, dict):
            return
        rpc_id = message.get("id")
        route = self._routes.get(rpc_id) if isinstance(rpc_id, str) else None
        # Only the terminal the call went to may answer it; anything else is late or forged.
        if route is None or (route.store_id, route.terminal_id) != (principal.store_id, principal.terminal_id):
            log.debug("rpc: ignoring answer %r from %s/%s", rpc_id, principal.store_id, principal.terminal_id)
            return
        kind = message.get("type")
        if kind == "rpc_result":
            answer = {"k": "res", "id": rpc_id, "result": message.get("result")}
        elif kind == "rpc_error":
            answer = {"k": "err", "id": rpc_id, "error": message.get("error")}
        else:
            return
        self._drop_route(rpc_id)
        await self._answer(route.origin, answer)

    # --- the caller side ------------------------------------------------------------------

    async def call(self, store_id: str, method: str, params: dict[str, Any], timeout_ms: int) -> dict[str, Any]:
        """Ask the store's master ERP; the validated result, or the error (ERP_UNREACHABLE within ``timeout_ms``)."""
        if method not in RESULTS:
            raise ValueError(f"unknown ERP RPC method {method!r}")
        started = time.perf_counter()
        deadline = asyncio.get_running_loop().time() + timeout_ms / 1000
        outcome = "ok"
        try:
            try:
                async with asyncio.timeout_at(deadline):
                    answer = await self._ask(store_id, method, params, deadline)
            except TimeoutError:
                raise unreachable("timeout", method, timeout_ms=timeout_ms) from None
            result = self._interpret(method, answer)
            RPC_SECONDS.labels(method).observe(time.perf_counter() - started)
            return result
        except TablelockError as exc:
            outcome = _outcome(exc)
            raise
        finally:
            RPC_CALLS.labels(method, outcome).inc()

    async def _ask(self, store_id: str, method: str, params: dict[str, Any], deadline: float) -> dict[str, Any]:
        await self._subscribed.wait()  # the answer comes back on our channel
        targets = await self._masters(store_id)
        if not targets:
            raise unreachable("no_master", method)
        for process_id, terminal_id, members in targets:
            answer = await self._attempt(store_id, process_id, terminal_id, method, params, deadline)
            if answer["k"] != "nack":
                return answer
            if process_id != self.process_id:
                # That process has no such socket (or is gone): stop asking it until it says so again.
                await self.redis.zrem(keys.erp_masters(store_id), *members)
        raise unreachable("not_delivered", method)

    async def _masters(self, store_id: str) -> list[tuple[str, str, list[str]]]:
        """(process_id, terminal_id, members) of the store's live master sockets, freshest first."""
        key = keys.erp_masters(store_id)
        cutoff = await self._clock() - self.stale_ms
        pipe = self.redis.pipeline(transaction=False)
        pipe.zremrangebyscore(key, "-inf", f"({cutoff}")
        pipe.zrevrangebyscore(key, "+inf", cutoff)
        _, members = await pipe.execute()
        targets: dict[tuple[str, str], list[str]] = {}
        for raw in members:
            member = raw.decode() if isinstance(raw, bytes) else raw
            process_id, _, rest = member.partition("|")
            terminal_id = rest.partition("|")[0]
            targets.setdefault((process_id, terminal_id), []).append(member)
        return [(p, t, m) for (p, t), m in targets.items()]

    async def _attempt(
        self, store_id: str, process_id: str, terminal_id: str, method: str, params: dict[str, Any],
        deadline: float,
    ) -> dict[str, Any]:
        rpc_id = secrets.token_hex(12)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[rpc_id] = future
        try:
            ttl_ms = max(1, int((deadline - asyncio.get_running_loop().time()) * 1000))
            request = {"type": "rpc", "id": rpc_id, "method": method, "params": params}
            if process_id == self.process_id:
                if not await self._deliver_here(rpc_id, self.process_id, store_id, terminal_id, request, ttl_ms):
                    return {"k": "nack", "id": rpc_id}
            else:
                forward = {"k": "req", "id": rpc_id, "origin": self.process_id, "store_id": store_id,
                           "terminal_id": terminal_id, "ttl_ms": ttl_ms, "message": request}
                receivers = await self.redis.publish(keys.rpc_channel(process_id), compact(forward))
                if receivers == 0 and self._publish_counts:
                    return {"k": "nack", "id": rpc_id}
            return await future
        finally:
            self._pending.pop(rpc_id, None)

    @staticmethod
    def _interpret(method: str, answer: dict[str, Any]) -> dict[str, Any]:
        kind = answer.get("k")
        if kind == "res":
            try:
                result = RESULTS[method].model_validate(answer.get("result"))
            except ValidationError as exc:
                log.warning("rpc: malformed %s result from the ERP: %s", method, exc.errors(include_url=False)[:3])
                raise unreachable("bad_reply", method) from None
            return result.model_dump(mode="json", exclude_none=True)
        if kind == "err":
            raise erp_error(method, answer.get("error"))
        raise unreachable("disconnected", method)

    # --- the owner side -------------------------------------------------------------------

    async def _deliver_here(
        self, rpc_id: str, origin: str, store_id: str, terminal_id: str, message: dict[str, Any], ttl_ms: int,
    ) -> bool:
        """Send ``message`` on a local socket of the terminal, remembering where its answer goes."""
        # The route exists before the message leaves, so even an instant answer finds it; it is
        # forgotten a little after the caller's deadline, when no answer can matter any more.
        expiry = asyncio.get_running_loop().call_later(ttl_ms / 1000 + 1.0, self._routes.pop, rpc_id, None)
        self._routes[rpc_id] = _Route(origin, store_id, terminal_id, expiry)
        try:
            delivered = bool(await self._deliver(store_id, terminal_id, message))
        except Exception:
            log.exception("rpc: delivering %s to %s/%s failed", rpc_id, store_id, terminal_id)
            delivered = False
        if not delivered:
            self._drop_route(rpc_id)
        return delivered

    async def _on_request(self, request: dict[str, Any]) -> None:
        try:
            rpc_id, origin = request["id"], request["origin"]
            store_id, terminal_id, message = request["store_id"], request["terminal_id"], request["message"]
            ttl_ms = int(request.get("ttl_ms") or 0)
        except (KeyError, TypeError, ValueError):
            log.warning("rpc: dropping a malformed request on %s", self.channel)
            return
        if not await self._deliver_here(rpc_id, origin, store_id, terminal_id, message, ttl_ms):
            await self._answer(origin, {"k": "nack", "id": rpc_id})

    def _drop_route(self, rpc_id: str) -> None:
        route = self._routes.pop(rpc_id, None)
        if route is not None:
            route.expiry.cancel()

    async def _answer(self, origin: str, answer: dict[str, Any]) -> None:
        """Hand an answer to the process that waits for it (this one, or another through Redis)."""
        if origin == self.process_id:
            self._resolve(answer)
            return
        try:
            await self.redis.publish(keys.rpc_channel(origin), compact(answer))
        except (RedisError, OSError) as exc:
            log.warning("rpc: cannot forward answer %s to %s: %s", answer.get("id"), origin, exc)

    def _resolve(self, answer: dict[str, Any]) -> None:
        future = self._pending.get(answer.get("id"))  # type: ignore[arg-type]
        if future is not None and not future.done():
            future.set_result(answer)  # a late answer finds no future and is dropped

    # --- background: channel listener and heartbeat ---------------------------------------

    def _dispatch(self, data: bytes) -> None:
        try:
            message = json.loads(data)
            kind = message["k"]
        except (ValueError, KeyError, TypeError):
            log.warning("rpc: dropping a malformed message on %s", self.channel)
            return
        if kind == "req":
            task = asyncio.create_task(self._on_request(message))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            self._resolve(message)

    async def _listen(self) -> None:
        failures = 0
        while True:
            url = self._urls[failures % len(self._urls)]
            client = subscriber_client(url, **_SUBSCRIBER_OPTIONS)
            pubsub = client.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is None:
                        continue
                    if message["type"] == "subscribe":
                        self._subscribed.set()
                        failures = 0
                    elif message["type"] == "message":
                        self._dispatch(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep listening whatever happened to this connection
                log.warning("rpc: listener on %s lost (%s); reconnecting", url, exc)
            finally:
                self._subscribed.clear()
                await asyncio.shield(self._close_quietly(pubsub, client))
            failures += 1
            await asyncio.sleep(min(0.05 * 2 ** min(failures, 6), 2.0))

    @staticmethod
    async def _close_quietly(pubsub: Any, client: Redis) -> None:
        for closing in (pubsub.aclose, client.aclose):
            try:
                await closing()
            except Exception:
                pass

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_ms / 1000)
            try:
                await self.heartbeat()
            except (RedisError, OSError) as exc:
                log.warning("rpc: heartbeat failed: %s", exc)

    async def heartbeat(self) -> None:
        """Refresh this process's master sockets in their stores' registries."""
        by_store: dict[str, list[str]] = {}
        for conn_id, (store_id, terminal_id) in list(self._local.items()):
            by_store.setdefault(store_id, []).append(self._member(terminal_id, conn_id))
        for store_id, members in by_store.items():
            await self._register(store_id, members)

    async def _register(self, store_id: str, members: list[str]) -> None:
        key = keys.erp_masters(store_id)
        now = await self._clock()
        pipe = self.redis.pipeline(transaction=False)
        pipe.zadd(key, {member: now for member in members})
        pipe.pexpire(key, self.stale_ms * 4)  # a store nobody serves any more leaves no key behind
        await pipe.execute()

    def _member(self, terminal_id: str, conn_id: str) -> str:
        return f"{self.process_id}|{terminal_id}|{conn_id}"


async def rpc_context(app: web.Application):
    """cleanup_ctx: this process's ErpRpc as ``services.rpc``, delivering through ``services.hub``."""
    services = app[SERVICES]

    async def deliver(store_id: str, terminal_id: str, message: dict[str, Any]) -> bool:
        hub = services.hub  # looked up per call: the hub's own cleanup_ctx may come before or after
        return hub is not None and bool(await hub.send_to_terminal(store_id, terminal_id, message))

    rpc = ErpRpc(
        services.redis, deliver=deliver, clock=services.engine.now,
        subscriber_urls=subscriber_urls(services.settings.redis_url, services.redis),
    )
    await rpc.start()
    services.rpc = rpc
    yield
    await rpc.close()
