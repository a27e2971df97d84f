"""The long-lived objects one coordinator process shares between its handlers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web

from coordinator.settings import Settings
from coordinator.store.auth import Authenticator
from coordinator.store.directory import Directory
from coordinator.store.engine import LockEngine


@dataclass
class Services:
    """Everything a handler may reach; built in ``app.py``, closed on shutdown."""

    settings: Settings
    redis: Any
    engine: LockEngine
    auth: Authenticator
    directory: Directory
    #: Local websocket fan-out (hub.py); set by its cleanup context.
    hub: Any = None
    #: ERP RPC across processes (rpc.py); set by its cleanup context.
    rpc: Any = None
    #: Provider payments (payments/runtime.py ``Payments``); set by app.py's payments context.
    payments: Any = None


SERVICES = web.AppKey("services", Services)
