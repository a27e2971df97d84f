"""One store's stand-in ERP: its database, its terminals (one master, any secondaries), their pages.

    sim = Simulator(coordinator_url, "s1", [TerminalSpec(token_a, "收银台", master=True),
                                            TerminalSpec(token_b, "服务员A")], db_path)
    await sim.start(pages_host="127.0.0.1", pages_ports=[0, 0])   # 0: any free port
    ... sim.pages -> [(terminal, url)], sim.terminals ...
    await sim.stop()

All terminals share the ERP database, as the terminals of one restaurant share its ERP server;
each has its own token, websocket and lock view.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from coordinator.security_headers import KEEPALIVE_TIMEOUT_SECONDS

from .db import ErpDatabase
from .page_guard import LOGIN_PARAM, PageLogin
from .pages import STREAMS, build_page_app
from .terminal import Terminal

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TerminalSpec:
    """A terminal to run: its token, a display name, and whether it is the store's master."""

    token: str
    name: str | None = None
    master: bool = False


class Simulator:
    """The ERP of one store on the wire protocol."""

    def __init__(self, coordinator_url: str, store_id: str, terminals: Sequence[TerminalSpec],
                 db: ErpDatabase | str | Path, *, min_backoff: float = 0.2, max_backoff: float = 5.0) -> None:
        self.coordinator_url = coordinator_url.rstrip("/")
        self.store_id = store_id
        self.db = db if isinstance(db, ErpDatabase) else ErpDatabase(db)
        self._own_db = not isinstance(db, ErpDatabase)
        self.terminals = [
            Terminal(self.coordinator_url, store_id, spec.token, self.db, name=spec.name, master=spec.master,
                     min_backoff=min_backoff, max_backoff=max_backoff)
            for spec in terminals
        ]
        self.pages: list[tuple[Terminal, str]] = []  # (terminal, login URL)
        self._runners: list[web.AppRunner] = []
        self._apps: list[web.Application] = []

    @property
    def master(self) -> Terminal | None:
        """The master terminal, if one runs here."""
        return next((t for t in self.terminals if t.master), None)

    def terminal(self, key: str | int) -> Terminal:
        """A terminal by index, terminal id, name, ``master`` or ``secondaryN`` (1-based)."""
        if isinstance(key, int) or str(key).isdigit():
            return self.terminals[int(key)]
        if key == "master" and self.master is not None:
            return self.master
        secondaries = [t for t in self.terminals if not t.master]
        if key.startswith("secondary") and key[9:].isdigit() and 0 < int(key[9:]) <= len(secondaries):
            return secondaries[int(key[9:]) - 1]
        for t in self.terminals:
            if key in (t.terminal_id, t.name):
                return t
        raise KeyError(f"no terminal {key!r} in this simulator")

    async def start(self, *, pages_host: str = "127.0.0.1", pages_ports: Sequence[int] | None = None,
                    wait: float | None = 10.0) -> Simulator:
        """Connect every terminal (waiting up to ``wait`` s for hello) and serve a page per port given."""
        for terminal in self.terminals:
            terminal.listeners.append(self._fan_out)
            await terminal.start()
        if pages_ports is not None:
            for terminal, port in zip(self.terminals, pages_ports):
                self.pages.append((terminal, await self._serve_page(terminal, pages_host, port)))
        if wait:
            await asyncio.gather(*(t.wait_connected(wait) for t in self.terminals))
        return self

    async def _serve_page(self, terminal: Terminal, host: str, port: int) -> str:
        """Serve ``terminal``'s page; return its login URL (it carries the page's key: print it, never log it)."""
        login = PageLogin(terminal.terminal_id)
        app = build_page_app(terminal, login)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=2, keepalive_timeout=KEEPALIVE_TIMEOUT_SECONDS)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        self._runners.append(runner)
        self._apps.append(app)
        bound = runner.addresses[0][1]
        shown = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host
        return f"http://{shown}:{bound}/?{LOGIN_PARAM}={login.key}"

    def _fan_out(self, origin: Terminal, notice: dict[str, Any] | None) -> None:
        """Any terminal's change may touch the shared database: every page redraws (notices stay own)."""
        for app in self._apps:
            for page in app[STREAMS]:
                page.touch()

    async def stop(self) -> None:
        """Stop the pages, then the terminals, then close the database."""
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()
        await asyncio.gather(*(t.stop() for t in self.terminals), return_exceptions=True)
        if self._own_db:
            self.db.close()

    async def __aenter__(self) -> Simulator:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
