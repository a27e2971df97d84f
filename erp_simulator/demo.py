"""``tablelock demo``: the coordinator, a seeded store and its ERP with three waiter pages, in one process.

The CLI starts the embedded Redis exactly as ``serve`` does and hands over the settings; this
module runs, on one event loop:

1. the coordinator application (``build_app``) on ``settings.host:port``;
2. the store through the admin API, like an operator with curl: the store, tables T1–T4 and
   three terminals (收银台 = master, 服务员A, 服务员B) whose tokens are kept in the data dir
   so a second run reuses them;
3. the ERP simulator on its own database (tables, menu, an open order on T1) with a waiter page
   per terminal on its own port;
4. the sandbox payment provider as a child process (``demo_sandbox.py``; port ``pages_port`` + 3,
   or a free one), with the store's WeChat Pay and Alipay settings set from its credentials
   through the admin API, so diners pay on its pay page (SPEC §9);

then prints where everything is (and T1's QR code) and runs until ``stop`` is set; the sandbox
process is stopped on the way out.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import segno
from aiohttp import web

from coordinator.app import build_app
from coordinator.security_headers import KEEPALIVE_TIMEOUT_SECONDS
from coordinator.settings import Settings

from .db import ErpDatabase
from .demo_sandbox import SandboxProvider
from .seed import TABLES, seed
from .simulator import Simulator, TerminalSpec

log = logging.getLogger("tablelock.demo")

STORE_NAME = "演示餐厅"
TERMINALS = (("收银台", True), ("服务员A", False), ("服务员B", False))


class DemoError(Exception):
    """The demo could not set itself up (the message says what to do)."""


async def run_demo(settings: Settings, stop: Any, *, store_id: str = "demo", pages_port: int | None = None,
                   pages_host: str = "127.0.0.1", say: Callable[[str], None] = print) -> None:
    """Run the whole demo until ``stop`` (an asyncio.Event) is set; everything is stopped on return.

    The waiter pages listen on ``pages_host`` (loopback unless told otherwise), whatever address
    the coordinator listens on for the diners' phones.
    """
    local = settings.model_copy(update={"public_url": None}).effective_public_url
    runner = web.AppRunner(build_app(settings), access_log=None, shutdown_timeout=5,
                           keepalive_timeout=KEEPALIVE_TIMEOUT_SECONDS)
    await runner.setup()
    sim: Simulator | None = None
    db: ErpDatabase | None = None
    sandbox: SandboxProvider | None = None
    try:
        try:
            await web.TCPSite(runner, settings.host, settings.port).start()
        except OSError as e:
            raise DemoError(f"cannot listen on {settings.host}:{settings.port}: {e}") from e
        admin_token = settings.admin_token.get_secret_value()
        home = settings.data_dir / "demo"
        home.mkdir(parents=True, exist_ok=True)
        tables, specs = await _seed_store(local, admin_token, store_id, home / f"terminals-{store_id}.json")
        db = ErpDatabase(home / f"erp-{store_id}.sqlite")
        seed(db)
        base = settings.port + 1 if pages_port is None else pages_port
        ports = [base + i if base else 0 for i in range(len(specs))]
        sim = Simulator(local, store_id, specs, db)
        try:
            await sim.start(pages_host=pages_host, pages_ports=ports, wait=15)
        except TimeoutError:
            say("warning: not every terminal connected to the coordinator within 15 s")
        except OSError as e:
            raise DemoError(f"cannot serve the waiter pages on ports {ports}: {e}") from e
        sandbox = SandboxProvider(settings.data_dir / "sandbox-pay", port=base + len(specs) if base else 0)
        try:
            await sandbox.start()
            await sandbox.configure(local, admin_token, store_id)
        except (OSError, RuntimeError, TimeoutError, aiohttp.ClientError) as e:
            raise DemoError(f"cannot start the sandbox payment provider: {e}") from e
        console = await _answers(f"{local}/admin/")
        _announce(say, settings, local, store_id, sim, tables["T1"]["qr_url"], console, sandbox)
        await stop.wait()
    finally:
        if sandbox is not None:
            await sandbox.stop()
        if sim is not None:
            await sim.stop()
        if db is not None:
            db.close()
        await runner.cleanup()


async def _seed_store(base: str, admin_token: str, store_id: str, tokens_file: Path) -> tuple[dict, list[TerminalSpec]]:
    """Create (or update) the demo store through the admin API; return its tables and terminals."""
    api = f"{base}/api/v1"
    headers = {"Authorization": f"Bearer {admin_token}"}
    async with aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=10)) as http:

        async def call(method: str, path: str, body: Any = None, ok: tuple[int, ...] = (200, 201)) -> Any:
            async with http.request(method, api + path, json=body) as response:
                payload = await response.json(content_type=None)
                if response.status not in ok:
                    raise DemoError(f"{method} {path}: {response.status} {payload}")
                return payload

        await call("PUT", f"/admin/stores/{store_id}", {"name": STORE_NAME})
        tables = {}
        for table_id, name in TABLES:
            tables[table_id] = await call("PUT", f"/admin/stores/{store_id}/tables/{table_id}", {"name": name})
        registered = {t["terminal_id"] for t in (await call("GET", f"/admin/stores/{store_id}/terminals"))["terminals"]}
        specs = _saved_terminals(tokens_file, registered)
        if specs is None:
            specs = []
            for name, master in TERMINALS:
                created = await call("POST", f"/admin/stores/{store_id}/terminals", {"name": name, "master": master})
                specs.append(TerminalSpec(created["token"], created["name"], created["master"]))
            _save_terminals(tokens_file, specs)
    return tables, specs


def _saved_terminals(path: Path, registered: set[str]) -> list[TerminalSpec] | None:
    """The terminals of an earlier run, if their tokens are still registered."""
    try:
        entries = json.loads(path.read_text())["terminals"]
        specs = [TerminalSpec(e["token"], e["name"], e["master"]) for e in entries]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if len(specs) != len(TERMINALS) or any(s.token.split("~")[2] not in registered for s in specs):
        return None
    return specs


def _save_terminals(path: Path, specs: list[TerminalSpec]) -> None:
    """Keep the demo terminals' tokens (mode 0600): the coordinator shows a token only once."""
    body = {"terminals": [{"token": s.token, "name": s.name, "master": s.master} for s in specs]}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(body, out, ensure_ascii=False, indent=2)


async def _answers(url: str) -> bool:
    """Whether ``url`` answers 200 (the demo prints no link that leads nowhere)."""
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            async with http.get(url) as response:
                return response.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


def _announce(say: Callable[[str], None], settings: Settings, local: str, store_id: str, sim: Simulator,
              h5_url: str, console: bool, sandbox: SandboxProvider) -> None:
    say("")
    say(f"tablelock demo: store {store_id!r} ({STORE_NAME}) is ready")
    if console:
        say(f"  admin console: {local}/admin/")
    else:
        say("  admin console: not in this build; the admin API is under /api/v1/admin/ (Bearer admin token)")
    say(f"  API (OpenAPI): {local}/api/v1/openapi.json")
    say(f"  readiness:     {local}/readyz")
    say(f"  admin token:   {_admin_token_hint(settings)}")
    for terminal, url in sim.pages:
        role = "master" if terminal.master else "secondary"
        say(f"  waiter page {terminal.name} ({role}): {url}")
    say(f"  H5 page for T1 (scan the QR code): {h5_url}")
    say(f"  sandbox payments (WeChat Pay + Alipay for {store_id!r}): {sandbox.url}/")
    say(f"    its switches: POST /sandbox/control there, bearer token in {sandbox.control_token_file}")
    say("")
    segno.make(h5_url, error="m").terminal(compact=True)
    say("")
    say("(Press CTRL+C to quit)")


def _admin_token_hint(settings: Settings) -> str:
    path = settings.secret_file("admin_token")
    if path.is_file() and path.read_text().strip() == settings.admin_token.get_secret_value():
        return f"in {path}"
    return "as configured (TABLELOCK_ADMIN_TOKEN or the settings file)"
