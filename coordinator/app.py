"""Wiring: build the aiohttp application of one coordinator process.

One ``cleanup_ctx`` (``_services``) opens Redis, builds the engine and the real-time runtime
(realtime/runtime.py), starts it, and only then sets the typed ``Services``; after ``yield`` it
stops the runtime (every task cancelled and awaited) and closes Redis. ``on_shutdown`` closes
every websocket with 1001 first, so aiohttp does not wait on their handlers.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from coordinator import metrics
from coordinator.api import admin, admin_payments, erp, h5, payments, shares
from coordinator.api import service_requests, tableops
from coordinator.api.middleware import errors_middleware, security_middleware
from coordinator.api.openapi import document
from coordinator.api.ws import websocket
from coordinator.core.models import StoreConfig
from coordinator.payments.runtime import Payments
from coordinator.realtime.runtime import Realtime
from coordinator.services import SERVICES, Services
from coordinator.settings import Settings, load_store_defaults
from coordinator.store.auth import Authenticator
from coordinator.store.directory import Directory
from coordinator.store.engine import LockEngine
from coordinator.store.ratelimit import RATE_LIMITER, RateLimiter
from coordinator.store.redis_conn import open_redis
from h5_client import STATIC_DIR as H5_STATIC

ROUTERS = (admin.router, erp.router, h5.router, payments.router, payments.notify_router, admin_payments.router)
#: SPEC §11 (stuck locks, table operations, service requests).
ROUTERS += (tableops.router, service_requests.router)
#: SPEC §10 (split bill: the ERP's share endpoints).
ROUTERS += (shares.router,)
SETTINGS = web.AppKey("settings", Settings)
#: Whether the app runs its expiry sweeper (a test of the scripts' own expiry turns it off).
SWEEPER = web.AppKey("sweeper", bool)
#: The admin console's files, served at ``/admin/`` (index.html) and ``/admin/static/``.
ADMIN_WEB = Path(__file__).parent / "web"


async def _services(app: web.Application):
    settings = app[SETTINGS]
    if settings.redis_url is None:
        raise RuntimeError("build_app needs settings.redis_url (the CLI starts an embedded Redis)")
    redis = await open_redis(settings.redis_url)
    defaults = StoreConfig.model_validate(load_store_defaults(settings.store_defaults_file))
    engine = LockEngine(redis, defaults=defaults, event_retention=settings.event_retention,
                        wait_replicas=settings.redis_wait_replicas, wait_timeout_ms=settings.redis_wait_timeout_ms,
                        refusal_window_ms=settings.h5_refusal_window_seconds * 1000,
                        refusals_per_table=settings.h5_refusals_per_table)
    auth = Authenticator(
        redis,
        admin_token=settings.admin_token.get_secret_value(),
        secret_key=settings.secret_key.get_secret_value(),
        session_ttl_ms=settings.h5_session_ttl_seconds * 1000,
    )
    directory = Directory(engine, settings.effective_public_url)
    realtime = Realtime(settings, engine, auth, sweeper=app[SWEEPER])
    try:
        await realtime.start()
        app[SERVICES] = Services.of(settings, engine, auth, directory, realtime)
        yield
    finally:
        await realtime.stop()
        await redis.aclose()


async def _close_sockets(app: web.Application) -> None:
    """on_shutdown: close every websocket with GOING_AWAY so the handlers end before aiohttp waits for them."""
    services = app.get(SERVICES)
    if services is not None:
        await services.realtime.close_sockets()


async def _payments(app: web.Application):
    services = app[SERVICES]
    settings = services.settings
    runtime = Payments.build(
        services.engine, secret_key=settings.secret_key.get_secret_value(),
        public_url=settings.effective_public_url, rpc=lambda: services.rpc,
        first_poll_ms=settings.payment_first_query_ms,
        provider_timeout=settings.payment_provider_timeout_seconds,
    )
    services.payments = runtime
    runtime.start()
    yield
    await runtime.aclose()


async def healthz(request: web.Request) -> web.Response:
    """The process is up; ``process`` names it (the id in presence and RPC routing; one per worker)."""
    services = request.app.get(SERVICES)
    process = services.realtime.liveness.masters.process_id if services is not None else None
    return web.json_response({"status": "ok", "process": process})


async def readyz(request: web.Request) -> web.Response:
    """Redis answers within a second."""
    try:
        await asyncio.wait_for(request.app[SERVICES].redis.ping(), timeout=1.0)
    except Exception:
        return web.json_response({"status": "unavailable", "redis": False}, status=503)
    return web.json_response({"status": "ok", "redis": True})


async def metrics_endpoint(request: web.Request) -> web.Response:
    """Prometheus exposition."""
    return web.Response(body=generate_latest(metrics.REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def h5_page(request: web.Request) -> web.FileResponse:
    """The diner's H5 page; it loads its scripts and styles from /h5/static/."""
    return web.FileResponse(H5_STATIC / "index.html", headers={"Cache-Control": "no-cache"})


async def admin_console(request: web.Request) -> web.FileResponse:
    """The admin console; it signs in with the admin token and loads /admin/static/."""
    return web.FileResponse(ADMIN_WEB / "index.html", headers={"Cache-Control": "no-cache"})


async def admin_console_redirect(request: web.Request) -> web.Response:
    """``/admin`` → ``/admin/`` so the page's relative links resolve."""
    raise web.HTTPFound("/admin/")


def build_app(settings: Settings, *, sweeper: bool = True) -> web.Application:
    """The coordinator application for ``settings`` (secrets must be set: see ensure_secrets)."""
    if settings.admin_token is None or settings.secret_key is None:
        settings = settings.ensure_secrets()
    app = web.Application(middlewares=[security_middleware(settings.cors_origins), errors_middleware],
                          client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[SWEEPER] = sweeper
    app[RATE_LIMITER] = RateLimiter(session_rate=settings.session_rate_per_minute,
                                    h5_rate=settings.h5_rate_per_minute)
    app.cleanup_ctx.append(_services)
    app.cleanup_ctx.append(_payments)  # after _services: deliveries use services.rpc
    app.on_shutdown.append(_close_sockets)
    endpoints = [e for router in ROUTERS for e in router.endpoints]
    for router in ROUTERS:
        router.install(app)
    openapi = json.dumps(document(endpoints, title="tablelock coordinator", version="1.0"))

    async def openapi_json(request: web.Request) -> web.Response:
        return web.Response(text=openapi, content_type="application/json")

    app.router.add_get("/api/v1/openapi.json", openapi_json)
    app.router.add_get("/api/v1/ws", websocket)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_endpoint)
    app.router.add_get("/h5/", h5_page)
    app.router.add_static("/h5/static/", H5_STATIC)
    app.router.add_get("/admin", admin_console_redirect)
    app.router.add_get("/admin/", admin_console)
    app.router.add_static("/admin/static/", ADMIN_WEB / "static")
    return app
