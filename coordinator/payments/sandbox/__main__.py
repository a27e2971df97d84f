"""``python -m coordinator.payments.sandbox``: run the sandbox payment provider."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import socket
import sys
import tempfile
from pathlib import Path

from aiohttp import web

from .app import build_app, publish


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    p = argparse.ArgumentParser(prog="sandbox-pay", description="Local WeChat Pay v3 / Alipay sandbox")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default loopback only)")
    p.add_argument("--port", type=int, default=8766, help="port (0 picks a free one)")
    p.add_argument("--data-dir", type=Path, default=None, help="keys, trades, credentials (default: a new temp dir)")
    p.add_argument("--public-url", default=None, help="base URL phones use, if not http://HOST:PORT")
    return p.parse_args(argv)


async def run(args: argparse.Namespace) -> None:
    """Serve until SIGINT/SIGTERM."""
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="sandbox-pay-"))
    app = build_app(data_dir)
    # No access log: a wap pay URL carries signed parameters. A short shutdown: a request parked by the "hang" switch must not hold SIGTERM for a minute.
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    sock = socket.create_server((args.host, args.port), family=socket.AF_INET6 if ":" in args.host else socket.AF_INET)
    port = sock.getsockname()[1]
    host = f"[{args.host}]" if ":" in args.host else args.host
    base_url = (args.public_url or f"http://{host}:{port}").rstrip("/")
    publish(app, data_dir, base_url)
    await web.SockSite(runner, sock).start()
    print(f"sandbox-pay listening on http://{host}:{port}", flush=True)
    print(f"sandbox-pay data dir {data_dir}", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``python -m coordinator.payments.sandbox`` and ``tablelock sandbox-pay``."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(run(parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
