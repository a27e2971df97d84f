"""Declared endpoints: one table drives the aiohttp routes, auth scopes, validation and OpenAPI.

    router = Router()

    @router.route("POST", "/stores/{store_id}/orders/{order_id}/locks", auth=("erp",),
                  body=LockRequest, responses={201: LockGrant})
    async def take_lock(call: Call) -> Reply: ...

The wrapper authenticates (``auth``), applies the rate limits (ratelimit.py: public endpoints per
client address, H5 sessions per session), enforces the store scope (an ERP terminal or H5 session
only reaches its own ``{store_id}``), validates path ids, the JSON body and the query against
their models, and serialises the reply. Errors are raised, never built here (see middleware.py);
the one thing done to them here is showing the lock a denial carries (stored form, from the
engine) as the caller may see it: the H5 form for an H5 session, the staff form with ``online``
(liveness) for terminals and admins (``shown_to``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Iterable

from aiohttp import web
from pydantic import BaseModel, ValidationError

from coordinator.core import views
from coordinator.core.errors import Forbidden, NotFound, TablelockError, ValidationFailed
from coordinator.core.rules import Kind
from coordinator.realtime.liveness import Liveness
from coordinator.services import SERVICES, Services
from coordinator.store.auth import Principal
from coordinator.store.ratelimit import RATE_LIMITER, client_address

PREFIX = "/api/v1"
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_KINDS = {kind.value for kind in Kind}


@dataclass
class Call:
    """What a handler gets: the request, who asks, and the validated inputs."""

    request: web.Request
    services: Services
    principal: Principal | None
    path: dict[str, str]
    body: Any = None
    query: Any = None


@dataclass
class Reply:
    """A handler's answer: a status and a model (or None for an empty body)."""

    status: int
    model: BaseModel | None = None


Handler = Callable[[Call], Awaitable["Reply | web.StreamResponse"]]


@dataclass
class Endpoint:
    """One declared endpoint."""

    method: str
    path: str
    handler: Handler
    auth: tuple[str, ...]
    body: type[BaseModel] | None
    query: type[BaseModel] | None
    responses: dict[int, type[BaseModel] | str | None]
    summary: str
    tag: str
    errors: tuple[int, ...] = field(default=())
    limit_public: bool = True


def bad_request(exc: ValidationError) -> ValidationFailed:
    """A pydantic error as the SPEC 400 with ``details``."""
    details = [
        {"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]}
        for e in exc.errors(include_url=False, include_context=False, include_input=False)
    ]
    first = details[0] if details else None
    where = ".".join(str(part) for part in first["loc"]) if first and first["loc"] else ""
    summary = f"{where}: {first['msg']}" if where else (first["msg"] if first else "")
    # The first problem in the message too, so a store admin reads it without opening details.
    return ValidationFailed(
        message=f"请求参数有误:{summary}" if summary else None,
        message_en=f"The request is invalid: {summary}" if summary else None,
        details=details,
    )


async def authenticate(request: web.Request, services: Services, token: str | None = None) -> Principal:
    """The Principal of the request's bearer token (or ``token``)."""
    if token is None:
        header = request.headers.get("Authorization", "")
        token = header[7:].strip() if header[:7].lower() == "bearer " else None
    return await services.auth.authenticate(token, services.engine.now)


async def shown_to(error: TablelockError, call: Call) -> None:
    """Put the lock ``error`` carries in the form the caller may see (invariant 6)."""
    await show_lock(error, call.principal, call.path.get("store_id"), call.services.liveness)


async def show_lock(error: TablelockError, principal: Principal | None, store_id: str | None,
                    liveness: Liveness) -> None:
    """Put the lock ``error`` carries in the form ``principal`` may see (HTTP and websocket commands)."""
    if not error.lock:
        return
    if principal is not None and principal.role == "h5":
        error.lock = views.h5_lock(error.lock, principal.session_id)
        return
    store_id = store_id or (principal.store_id if principal else None) or ""
    holder = error.lock.get("holder") or {}
    seen = "online" in holder or holder.get("role") != "erp"  # the script said (or nothing to say)
    error.lock = views.staff_lock(error.lock, frozenset() if seen else await liveness.online(store_id))


class Router:
    """A table of endpoints for one area of the API (admin, ERP, H5…)."""

    def __init__(self, tag: str, *, limit_public: bool = True) -> None:
        self.tag = tag
        self.endpoints: list[Endpoint] = []
        #: False for public endpoints that verify their callers themselves (provider notifications:
        #: a busy store's notifications come from a few provider addresses).
        self.limit_public = limit_public

    def route(
        self,
        method: str,
        path: str,
        *,
        auth: Iterable[str],
        responses: dict[int, type[BaseModel] | str | None],
        body: type[BaseModel] | None = None,
        query: type[BaseModel] | None = None,
        errors: Iterable[int] = (),
    ) -> Callable[[Handler], Handler]:
        """Declare ``handler`` as ``method path``; the docstring's first line is its summary."""

        def decorate(handler: Handler) -> Handler:
            summary = (handler.__doc__ or handler.__name__).strip().splitlines()[0]
            self.endpoints.append(
                Endpoint(method, path, handler, tuple(auth), body, query, responses, summary,
                         self.tag, tuple(errors), self.limit_public)
            )
            return handler

        return decorate

    def install(self, app: web.Application) -> None:
        """Add every endpoint to ``app`` under ``/api/v1``."""
        for endpoint in self.endpoints:
            app.router.add_route(endpoint.method, PREFIX + endpoint.path, _wrap(endpoint))


def _wrap(endpoint: Endpoint) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        services = request.app[SERVICES]
        path = dict(request.match_info)
        for name, value in path.items():
            if not (value in _KINDS if name == "kind" else _ID.match(value)):
                raise NotFound()
        principal = None
        limiter = request.app.get(RATE_LIMITER)
        if endpoint.auth == ("public",):
            if limiter is not None and endpoint.limit_public:
                await limiter.session_creation(services.engine.scripts, client_address(request))
        else:
            principal = await authenticate(request, services)
            if limiter is not None and principal.role == "h5":
                await limiter.h5_request(services.engine.scripts, principal)
            if principal.role not in endpoint.auth:
                raise Forbidden()
            store_id = path.get("store_id")
            if principal.role != "admin" and store_id is not None and store_id != principal.store_id:
                raise Forbidden()
        call = Call(request, services, principal, path)
        if endpoint.body is not None:
            raw = await request.read()
            try:
                call.body = endpoint.body.model_validate_json(raw or b"{}")
            except ValidationError as exc:
                raise bad_request(exc) from None
        if endpoint.query is not None:
            try:
                call.query = endpoint.query.model_validate(dict(request.query))
            except ValidationError as exc:
                raise bad_request(exc) from None
        try:
            result = await endpoint.handler(call)
        except TablelockError as error:
            await shown_to(error, call)
            raise
        if isinstance(result, web.StreamResponse):
            return result
        if result.model is None:
            return web.Response(status=result.status)
        return web.Response(
            status=result.status,
            body=result.model.model_dump_json(exclude_none=False).encode(),
            content_type="application/json",
        )

    handle.__name__ = endpoint.handler.__name__
    return handle
