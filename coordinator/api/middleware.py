"""The one place where exceptions become HTTP responses (the SPEC error body).

A client's mistake is a 4xx with a code; Redis trouble is 503 UNAVAILABLE; anything else is
logged with its traceback and answered with a bare 500 body that carries no Python detail.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web
from redis.exceptions import BusyLoadingError, ClusterDownError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeout

from coordinator import metrics
from coordinator.core.errors import (
    InternalError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    TablelockError,
    Unavailable,
    ValidationFailed,
)
from coordinator.security_headers import add_security_headers

log = logging.getLogger(__name__)
Middleware = Callable[[web.Request, Callable[[web.Request], Awaitable[web.StreamResponse]]], Awaitable[web.StreamResponse]]


def error_response(error: TablelockError) -> web.Response:
    """The SPEC error body for ``error``."""
    return web.Response(
        status=error.status, headers=error.headers() or None, content_type="application/json",
        body=json.dumps(error.body(), ensure_ascii=False).encode(),
    )


def _from_http(exc: web.HTTPException) -> TablelockError | None:
    """The SPEC error for an aiohttp one (unknown path, wrong method, body too large…)."""
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return PayloadTooLarge()
    if isinstance(exc, web.HTTPNotFound):
        return NotFound()
    if isinstance(exc, web.HTTPMethodNotAllowed):
        return MethodNotAllowed(exc.allowed_methods)
    if exc.status < 500 and exc.status >= 400:
        return ValidationFailed(details=[{"msg": exc.reason}])
    return None


def _torn_connection(exc: BaseException) -> bool:
    """Whether ``exc`` is redis-py's own connection layer failing mid-command, not our bug.

    redis-py's asyncio connection can lose its stream writer to a concurrent disconnect while a
    command is being sent (seen during a Cluster failover: AttributeError on ``_writer``); that is
    a Redis outage for the caller, like the ConnectionError it should have been.
    """
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return (isinstance(exc, AttributeError) and tb is not None
            and tb.tb_frame.f_code.co_filename.endswith(("redis/asyncio/connection.py", "redis/connection.py")))


#: Redis (or the network to it) failing: 503 UNAVAILABLE, not a bug. CLUSTERDOWN (a shard without a
#: master mid-failover; MasterDownError is one) and TRYAGAIN (a slot mid-migration) pass once the
#: cluster settles.
OUTAGES = (RedisConnectionError, RedisTimeout, BusyLoadingError, ClusterDownError, TryAgainError, ConnectionError,
           OSError)


def is_outage(exc: BaseException) -> bool:
    """Whether ``exc`` means Redis is unreachable (answered 503 UNAVAILABLE), for non-HTTP callers too."""
    return isinstance(exc, OUTAGES) or _torn_connection(exc)


@web.middleware
async def errors_middleware(request: web.Request, handler) -> web.StreamResponse:
    """Map every exception to its SPEC body; time the request for /metrics."""
    started = time.perf_counter()
    route = request.match_info.route.resource.canonical if request.match_info.route.resource else "unmatched"
    try:
        max_size = request.app._client_max_size  # the same bound aiohttp applies on read
        if request.content_length is not None and request.content_length > max_size:
            raise PayloadTooLarge()
        response = await handler(request)
    except TablelockError as error:
        response = error_response(error)
    except web.HTTPException as exc:
        mapped = _from_http(exc)
        if mapped is None:
            raise
        response = error_response(mapped)
    except OUTAGES:
        log.warning("redis unavailable during %s %s", request.method, request.path)
        response = error_response(Unavailable())
    except Exception as exc:
        if _torn_connection(exc):
            log.warning("redis connection torn down during %s %s", request.method, request.path)
            response = error_response(Unavailable())
        else:
            log.exception("unhandled error in %s %s", request.method, request.path)
            response = error_response(InternalError())
    metrics.REQUEST_SECONDS.labels(request.method, route, str(response.status)).observe(
        time.perf_counter() - started
    )
    return response


# --- security headers and CORS (issue 15) --------------------------------------------------------

#: What a listed origin may send cross-origin: the API's bearer tokens travel in Authorization,
#: never in cookies, so no Access-Control-Allow-Credentials is ever sent.
_CORS_METHODS = "GET, POST, PUT, PATCH, DELETE"
_CORS_HEADERS = "Authorization, Content-Type"
_CORS_MAX_AGE = "600"


def security_middleware(cors_origins: Sequence[str]) -> Middleware:
    """Return the middleware that adds the security headers to every answer and applies ``cors_origins``.

    CORS is granted only to the exact origins listed (settings ``cors_origins``) and only on
    ``/api/``; ``*`` is refused at start-up, since a wildcard would let any site drive the API.
    """
    if "*" in cors_origins:
        raise ValueError("cors_origins lists origins (https://shop.example); '*' is not allowed")
    allowed = frozenset(origin.rstrip("/") for origin in cors_origins)

    @web.middleware
    async def security_headers_middleware(request: web.Request, handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        cors = origin in allowed and request.path.startswith("/api/")
        if cors and request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            response: web.StreamResponse = web.Response(status=204, headers={
                "Access-Control-Allow-Methods": _CORS_METHODS,
                "Access-Control-Allow-Headers": _CORS_HEADERS,
                "Access-Control-Max-Age": _CORS_MAX_AGE,
            })
        else:
            try:
                response = await handler(request)
            except web.HTTPException as exc:  # raised past the error middleware (redirects, static 404s)
                add_security_headers(exc.headers)
                raise
        if not response.prepared:  # a websocket or stream has sent its headers already
            add_security_headers(response.headers)
            if cors:
                response.headers["Access-Control-Allow-Origin"] = origin
            response.headers.add("Vary", "Origin")
        return response

    return security_headers_middleware
