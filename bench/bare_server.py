"""The HTTP floor: the least an aiohttp service can do for the P1 lock cycle.

    .venv/bin/python bench/bare_server.py PORT REDIS_URL      (started by p1_lock_cycle.py)

Two routes with the coordinator's paths and reply shapes, each one EVALSHA of the floor's Lua
(bench/loadgen.py) and nothing else: no authentication, no validation models, no events, no
presence, no sweeper index. The gap between this and the floor is the price of HTTP on aiohttp
and CPython on this machine; the gap between this and the coordinator is the product's own work.
"""

from __future__ import annotations

import json
import secrets
import sys
from pathlib import Path

from aiohttp import web
from redis.asyncio import Redis

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import FLOOR_ACQUIRE, FLOOR_RELEASE  # noqa: E402

REDIS = web.AppKey("redis", Redis)


async def redis_ctx(app: web.Application):
    app[REDIS] = Redis.from_url(app["url"], max_connections=256)
    app["acquire"] = app[REDIS].register_script(FLOOR_ACQUIRE)
    app["release"] = app[REDIS].register_script(FLOOR_RELEASE)
    yield
    await app[REDIS].aclose()


async def acquire(request: web.Request) -> web.Response:
    order = request.match_info["order_id"]
    await request.read()
    token = secrets.token_urlsafe(24)
    fence = await request.app["acquire"](keys=[f"bare:lock:{order}", f"bare:fence:{order}"], args=[token, 180_000])
    if not fence:
        return web.json_response({"error": {"code": "PAYMENT_LOCKED"}}, status=409)
    return web.json_response({"lock": {"kind": "payment", "order_id": order, "fence": fence, "token": token}},
                             status=201)


async def release(request: web.Request) -> web.Response:
    order = request.match_info["order_id"]
    token = json.loads(await request.read())["token"]
    done = await request.app["release"](keys=[f"bare:lock:{order}"], args=[token])
    return web.json_response({"released": done == 1})


async def ready(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def main() -> None:
    port, url = int(sys.argv[1]), sys.argv[2]
    app = web.Application()
    app["url"] = url
    app.cleanup_ctx.append(redis_ctx)
    app.router.add_post("/api/v1/stores/{store_id}/orders/{order_id}/locks", acquire)
    app.router.add_post("/api/v1/stores/{store_id}/orders/{order_id}/locks/{kind}/release", release)
    app.router.add_get("/readyz", ready)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


if __name__ == "__main__":
    main()
