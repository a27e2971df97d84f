"""The long-lived objects one coordinator process shares between its handlers."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from coordinator.h5 import H5Service
from coordinator.payments.runtime import Payments
from coordinator.realtime.hub import Hub
from coordinator.realtime.liveness import Liveness
from coordinator.realtime.rpc import ErpRpc
from coordinator.realtime.runtime import Realtime
from coordinator.settings import Settings
from coordinator.store.auth import Authenticator
from coordinator.store.directory import Directory
from coordinator.store.engine import LockEngine
from coordinator.store.redis_conn import AnyRedis


@dataclass
class Services:
    """Everything a handler may reach; built once at startup in ``app.py``, closed on shutdown."""

    settings: Settings
    redis: AnyRedis
    engine: LockEngine
    auth: Authenticator
    directory: Directory
    #: The process's real-time runtime (owner of what follows, and of the sockets).
    realtime: Realtime
    #: Its parts the HTTP handlers use: fan-out (revocation closes sockets), ERP RPC, presence.
    hub: Hub
    rpc: ErpRpc
    liveness: Liveness
    #: The diner's flows (menu, add-ons, checkout), callable without HTTP.
    h5: H5Service
    #: Provider payments (SPEC §9); set by app.py's payments context, after the real-time runtime.
    payments: Payments | None = None

    @classmethod
    def of(cls, settings: Settings, engine: LockEngine, auth: Authenticator, directory: Directory,
           realtime: Realtime) -> Services:
        """The services of a process whose real-time runtime is ``realtime``."""
        h5 = H5Service(engine.redis, engine, directory, auth, realtime.rpc)
        return cls(settings=settings, redis=engine.redis, engine=engine, auth=auth, directory=directory,
                   realtime=realtime, hub=realtime.hub, rpc=realtime.rpc, liveness=realtime.liveness, h5=h5)


SERVICES = web.AppKey("services", Services)
