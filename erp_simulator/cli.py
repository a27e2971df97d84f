"""``tablelock erp``: run one store's ERP terminals against a coordinator, headless or with pages.

    tablelock erp --coordinator http://127.0.0.1:8080 --store s1 \\
        --master-token erp~s1~Ta~… --secondary-token erp~s1~Tb~… [--pages-port 8091] [--scenario s.toml]
    tablelock erp --coordinator … --store s1 --token-file terminals.toml

Token file (TOML, or JSON of the same shape)::

    [[terminals]]
    token = "erp~s1~Ta~…"
    name = "收银台"
    master = true

The flags are declared in ``coordinator/cli.py`` (so ``serve`` never imports the simulator).
Without ``--scenario`` it runs until SIGINT/SIGTERM; with one it plays it and exits 0 when every
step ended as expected, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import tomllib
from pathlib import Path
from typing import Any

from coordinator.log_redaction import install_redaction

from .db import ErpDatabase
from .scenario import ScenarioFailed, load_scenario, run_scenario
from .seed import seed
from .simulator import Simulator, TerminalSpec

log = logging.getLogger("tablelock.erp")


def load_token_file(path: Path) -> list[TerminalSpec]:
    """Terminals from a TOML or JSON token file (``terminals = [{token, name?, master?}]``)."""
    raw = path.read_bytes()
    data: Any = tomllib.loads(raw.decode()) if path.suffix == ".toml" else json.loads(raw)
    entries = data.get("terminals") if isinstance(data, dict) else data
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{path}: expected a non-empty list of terminals")
    return [TerminalSpec(token=str(e["token"]), name=e.get("name"), master=bool(e.get("master"))) for e in entries]


def terminal_specs(args: argparse.Namespace) -> list[TerminalSpec]:
    """The terminals named on the command line (token file first, then the token flags)."""
    specs = load_token_file(args.token_file) if args.token_file else []
    if args.master_token:
        specs.append(TerminalSpec(args.master_token, "master", master=True))
    specs += [TerminalSpec(token, f"secondary{i}") for i, token in enumerate(args.secondary_token, 1)]
    if not specs:
        raise ValueError("give --token-file, or --master-token and/or --secondary-token")
    if sum(spec.master for spec in specs) > 1:
        raise ValueError("a store has one master terminal")
    return specs


def run_erp(args: argparse.Namespace) -> int:
    """Run ``tablelock erp``; returns the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install_redaction()
    try:
        specs = terminal_specs(args)
        scenario = load_scenario(args.scenario) if args.scenario else None
    except (OSError, ValueError, KeyError, tomllib.TOMLDecodeError) as e:
        print(f"tablelock erp: {e}", file=sys.stderr)
        return 2
    db_path = args.db or Path(".tablelock") / f"erp-{args.store}.sqlite"
    db_path.parent.mkdir(parents=True, exist_ok=True)
    return asyncio.run(_erp(args, specs, scenario, db_path))


async def _erp(args: argparse.Namespace, specs: list[TerminalSpec], scenario: dict | None, db_path: Path) -> int:
    stop = stop_on_signals()
    db = ErpDatabase(db_path)
    if args.seed:
        seed(db)
    ports = None
    if args.pages_port is not None:
        ports = [args.pages_port + i if args.pages_port else 0 for i in range(len(specs))]
    sim = Simulator(args.coordinator, args.store, specs, db)
    try:
        try:
            await sim.start(pages_host=args.pages_host, pages_ports=ports, wait=10)
        except TimeoutError:
            print("tablelock erp: not every terminal connected within 10 s; still trying", file=sys.stderr)
        for terminal in sim.terminals:
            role = "master" if terminal.master else "secondary"
            say(f"terminal {terminal.name} ({terminal.terminal_id}, {role}): "
                f"{'connected' if terminal.connected else 'connecting'}")
        for terminal, url in sim.pages:
            say(f"  waiter page {terminal.name}: {url}")
        if scenario is not None:
            try:
                await run_scenario(sim, scenario, say=say)
            except ScenarioFailed as e:
                print(f"tablelock erp: scenario failed: {e}", file=sys.stderr)
                return 1
            say("scenario done")
            return 0
        say("(Press CTRL+C to quit)")
        await stop.wait()
        return 0
    finally:
        await sim.stop()
        db.close()


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM (installed on the running loop)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    return stop


def say(line: str) -> None:
    """Print a line for the operator, now."""
    print(line, flush=True)
