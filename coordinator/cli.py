"""The `tablelock` command: `serve` runs the coordinator, with an embedded Redis unless one is configured;
`demo` runs everything on one machine; `erp` runs a store's ERP simulator."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import signal
import sys
import tomllib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from pydantic import ValidationError

from coordinator.log_redaction import RedactingAccessLogger, install_redaction
from coordinator.redis_embedded import EmbeddedRedis, EmbeddedRedisError
from coordinator.settings import CONFIG_ENV, Settings

log = logging.getLogger("tablelock")


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="tablelock",
        description="Order/payment lock coordinator between a restaurant ERP and its H5 ordering page.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run the coordinator (HTTP API, websockets, admin console)",
        description="Run the coordinator. Flags override TABLELOCK_* variables, which override the TOML file.",
    )
    serve.add_argument("--host", help="address to listen on (TABLELOCK_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (TABLELOCK_PORT, default 8080)")
    serve.add_argument(
        "--redis-url",
        help="Redis or Redis Cluster URL (TABLELOCK_REDIS_URL); unset: start an embedded redis-server",
    )
    serve.add_argument("--data-dir", type=Path, help="embedded Redis data and secrets (TABLELOCK_DATA_DIR)")
    serve.add_argument("--config", type=Path, help=f"settings TOML file ({CONFIG_ENV}, default config/tablelock.toml)")
    serve.add_argument("--workers", type=int,
                       help="coordinator processes sharing the port with SO_REUSEPORT (TABLELOCK_WORKERS, default 1)")
    serve.set_defaults(run=serve_command)

    demo = commands.add_parser(
        "demo",
        help="run everything on this machine: coordinator, a seeded store, its ERP and waiter pages",
        description="Start the coordinator (embedded Redis unless configured), create a demo store through "
        "the admin API, run the ERP simulator with a master and two secondary terminals, each with a waiter "
        "page, and print every URL and the QR code of table T1. Stops everything on CTRL+C or SIGTERM.",
    )
    demo.add_argument("--host", help="address to listen on (TABLELOCK_HOST, default 127.0.0.1)")
    demo.add_argument("--port", type=int, help="coordinator port (TABLELOCK_PORT, default 8080)")
    demo.add_argument("--redis-url", help="Redis URL (TABLELOCK_REDIS_URL); unset: start an embedded redis-server")
    demo.add_argument("--data-dir", type=Path, help="embedded Redis data, secrets, demo ERP (TABLELOCK_DATA_DIR)")
    demo.add_argument("--config", type=Path, help=f"settings TOML file ({CONFIG_ENV}, default config/tablelock.toml)")
    demo.add_argument("--store", default="demo", help="id of the demo store (default demo)")
    demo.add_argument("--pages-port", type=int,
                      help="first waiter page port (default: coordinator port + 1; 0: any free ports)")
    demo.add_argument("--pages-host", default="127.0.0.1",
                      help="address the waiter pages listen on (default 127.0.0.1; they are logged in with the "
                      "printed link's key either way)")
    demo.set_defaults(run=demo_command)

    erp = commands.add_parser(
        "erp",
        help="run a store's ERP terminals (the simulator) against a coordinator, headless or with pages",
        description="Run one store's stand-in ERP: a master and/or secondary terminals on the wire protocol, "
        "its own order database, optional waiter pages, and an optional TOML scenario to play.",
    )
    erp.add_argument("--coordinator", required=True, help="coordinator base URL, e.g. http://127.0.0.1:8080")
    erp.add_argument("--store", required=True, help="the store id")
    erp.add_argument("--token-file", type=Path, help="TOML/JSON file listing the terminals and their tokens")
    erp.add_argument("--master-token", help="token of the master terminal (answers the coordinator's RPCs)")
    erp.add_argument("--secondary-token", action="append", default=[],
                     help="token of a secondary terminal (repeatable)")
    erp.add_argument("--db", type=Path, help="the ERP's sqlite file (default ./.tablelock/erp-<store>.sqlite)")
    erp.add_argument("--seed", action="store_true", help="put the demo tables, menu and an order on T1 in the database")
    erp.add_argument("--pages-port", type=int,
                     help="serve a waiter page per terminal from this port on (0: free ports); default headless")
    erp.add_argument("--pages-host", default="127.0.0.1", help="address the waiter pages listen on")
    erp.add_argument("--scenario", type=Path, help="TOML scenario to play, then exit")
    erp.set_defaults(run=erp_command)

    sandbox = commands.add_parser(
        "sandbox-pay",
        help="run the sandbox payment provider (WeChat Pay v3 and Alipay wire formats, local keys)",
        description="Run the local sandbox payment provider (`tablelock sandbox-pay --help` lists its flags).",
        add_help=False,
    )
    sandbox.set_defaults(run=lambda args: 2)  # never reached: main() hands sandbox-pay over first
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `tablelock` command line and return its exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["sandbox-pay"]:  # its flags are the sandbox's own: hand them over untouched
        from coordinator.payments.sandbox.__main__ import main as sandbox_main

        return sandbox_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        return 130


def load_settings(args: argparse.Namespace) -> Settings:
    """Build Settings from the TOML file, the environment and the flags that were given."""
    flags = {"host": args.host, "port": args.port, "redis_url": args.redis_url, "data_dir": args.data_dir,
             "workers": getattr(args, "workers", None)}
    return Settings(_config_file=args.config, **{k: v for k, v in flags.items() if v is not None})


def serve_command(args: argparse.Namespace) -> int:
    """Run the coordinator until SIGINT/SIGTERM, then stop the embedded Redis if we started one."""
    try:
        configured = load_settings(args)
        settings = configured.ensure_secrets()
    except (OSError, tomllib.TOMLDecodeError, ValidationError) as e:
        print(f"tablelock: invalid settings: {e}", file=sys.stderr)
        return 2
    setup_logging(settings)
    if configured.admin_token is None:
        _say(f"admin token: {settings.secret_file('admin_token')}")
    else:
        _say("admin token: as configured (TABLELOCK_ADMIN_TOKEN or the settings file)")

    # Until aiohttp installs its own handlers, turn SIGTERM into an exception so `finally` runs.
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    with _redis(settings) as settings:
        if settings is None:
            return 1
        if settings.workers == 1:
            return run_app(settings)
        from coordinator.workers import run_workers

        return run_workers(settings, settings.workers)


def setup_logging(settings: Settings, tag: str = "") -> None:
    """Log at ``settings.log_level`` with secrets redacted; ``tag`` names a worker process in each line."""
    prefix = f"[{tag}] " if tag else ""
    logging.basicConfig(level=settings.log_level, format=f"%(asctime)s %(levelname)s {prefix}%(name)s: %(message)s")
    install_redaction()


@contextlib.contextmanager
def _redis(settings: Settings, stopped: Callable[[str], object] = log.info) -> Iterator[Settings | None]:
    """Settings pointing at Redis: the configured one, or a redis-server started here and stopped on exit.

    Yields None (after saying why) when the embedded Redis cannot start.
    """
    if settings.redis_url is not None:
        yield settings
        return
    try:
        embedded = EmbeddedRedis(settings.data_dir).start()
    except EmbeddedRedisError as e:
        print(f"tablelock: cannot start the embedded Redis: {e}", file=sys.stderr)
        yield None
        return
    log.info("started embedded Redis %s (pid %s, data in %s)", embedded.safe_url, embedded.pid, embedded.data_dir)
    try:
        yield settings.model_copy(update={"redis_url": embedded.url})
    finally:
        embedded.stop()
        stopped("embedded Redis stopped")


def demo_command(args: argparse.Namespace) -> int:
    """Run the demo until SIGINT/SIGTERM: coordinator, embedded Redis, seeded store, ERP and pages."""
    try:
        settings = load_settings(args).ensure_secrets()
    except (OSError, tomllib.TOMLDecodeError, ValidationError) as e:
        print(f"tablelock: invalid settings: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install_redaction()
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)  # until the loop installs its own handlers
    with _redis(settings, stopped=_say) as settings:
        return 1 if settings is None else asyncio.run(_demo(settings, args))


async def _demo(settings: Settings, args: argparse.Namespace) -> int:
    from erp_simulator.cli import stop_on_signals
    from erp_simulator.demo import DemoError, run_demo

    stop = stop_on_signals()
    try:
        await run_demo(settings, stop, store_id=args.store, pages_port=args.pages_port, pages_host=args.pages_host,
                       say=_say)
    except DemoError as e:
        print(f"tablelock demo: {e}", file=sys.stderr)
        return 1
    _say("tablelock demo stopped")
    return 0


def erp_command(args: argparse.Namespace) -> int:
    """Run the ERP simulator for one store (see erp_simulator/cli.py)."""
    from erp_simulator.cli import run_erp  # late: `serve` never loads the simulator

    return run_erp(args)


def run_app(settings: Settings, *, reuse_port: bool = False, announce: bool = True) -> int:
    """Serve the coordinator in this process until SIGINT/SIGTERM; ``reuse_port`` for a worker of several."""
    from aiohttp import web

    from coordinator.app import build_app  # late: the service pulls in everything else

    app = build_app(settings)
    tune_gc()
    try:
        web.run_app(
            app,
            host=settings.host,
            port=settings.port,
            print=_announce(settings) if announce else None,
            reuse_port=reuse_port or None,
            access_log_class=RedactingAccessLogger,  # ?token= of old websocket clients, ?qr= of H5 links
            shutdown_timeout=10,  # websockets are closed by the app; do not linger a minute
        )
    except OSError as e:
        print(f"tablelock: cannot listen on {settings.host}:{settings.port}: {e}", file=sys.stderr)
        return 1
    return 0


#: Collection thresholds of a serving process (CPython's default is 700, 10, 10).
GC_THRESHOLDS = (20_000, 20, 10)


def tune_gc() -> None:
    """Make full collections rare in a process that holds thousands of websockets.

    Every socket keeps a few hundred tracked objects alive, and a full collection walks them all:
    ~0.4 s at 5,000 sockets on a 2-core machine. With the default thresholds, request and event
    objects still in flight at a young collection were promoted fast enough to trigger a full one
    every 1-7 s, so pushes stalled that long (bench/README.md, P2). Larger young generations let
    those objects die young; full collections then come from real growth only.
    """
    gc.set_threshold(*GC_THRESHOLDS)


def _announce(settings: Settings) -> Callable[..., None]:
    """Return the `print` aiohttp calls once listening: our URLs instead of its banner."""
    local = settings.model_copy(update={"public_url": None}).effective_public_url

    def announce(*_: object) -> None:
        _say(f"tablelock serving on {local}")
        _say(f"  admin console: {local}/admin/")
        _say(f"  readiness:     {local}/readyz")
        if settings.public_url:
            _say(f"  QR links:      {settings.effective_public_url}")
        _say("(Press CTRL+C to quit)")

    return announce


def _say(line: str) -> None:
    print(line, flush=True)


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
