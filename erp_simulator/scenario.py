"""Scripted mode: play a TOML scenario of waiter actions on a running Simulator.

    repeat = 1                       # play the steps this many times (load)

    [[step]]
    terminal = "secondary1"          # "master", "secondaryN", a name, a terminal id or an index
    action = "open_editor"           # see ACTIONS
    table = "T1"                     # the table's open order (or: order = "o1")
    force = false                    # for open_editor / presettle / checkout
    items = [{ sku = "tea", qty = 1 }]   # for open_order / add_dishes
    line = "l1"                      # for remove_line
    expect = "ORDER_LOCKED"          # the refusal this step must meet (default "ok": it must succeed)

    [[step]]
    action = "sleep"
    seconds = 0.5

A step that does not end as ``expect`` says stops the scenario with ``ScenarioFailed``.
"""

from __future__ import annotations

import asyncio
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .client import Refused
from .simulator import Simulator
from .terminal import Terminal

ACTIONS = (
    "open_order", "open_editor", "add_dishes", "remove_line", "submit", "presettle", "unpresettle",
    "checkout", "complete_payment", "cancel_payment", "sleep",
)


class ScenarioFailed(Exception):
    """A step did not end as its ``expect`` said."""


@dataclass
class StepResult:
    """What one step did: ``outcome`` is "ok" or the refusal code."""

    index: int
    action: str
    terminal: str | None
    outcome: str
    seconds: float


def load_scenario(path: str | Path) -> dict[str, Any]:
    """Read and check a scenario file; raises ValueError naming the bad step."""
    with open(path, "rb") as f:
        scenario = tomllib.load(f)
    steps = scenario.get("step") or []
    if not isinstance(steps, list) or not steps:
        raise ValueError(f"{path}: a scenario needs at least one [[step]]")
    for i, step in enumerate(steps, 1):
        if step.get("action") not in ACTIONS:
            raise ValueError(f"{path}: step {i}: action must be one of {', '.join(ACTIONS)}")
    if not isinstance(scenario.get("repeat", 1), int) or scenario.get("repeat", 1) < 1:
        raise ValueError(f"{path}: repeat must be a positive integer")
    return scenario


def _order_id(terminal: Terminal, step: dict[str, Any]) -> str:
    if step.get("order"):
        return str(step["order"])
    table = step.get("table")
    order = terminal.db.table_order(str(table)) if table else None
    if order is None:
        raise Refused("NOT_FOUND", f"{table} 没有未结订单", f"No open order on table {table}", status=404)
    return order["order_id"]


async def run_step(sim: Simulator, step: dict[str, Any]) -> str:
    """Run one step; return "ok" or the refusal code."""
    action = step["action"]
    if action == "sleep":
        await asyncio.sleep(float(step.get("seconds", 1)))
        return "ok"
    terminal = sim.terminal(step.get("terminal", "master"))
    force = bool(step.get("force", False))
    items = [{"sku": i["sku"], "qty": int(i.get("qty", 1))} for i in step.get("items", [])]
    try:
        if action == "open_order":
            await terminal.open_order(str(step["table"]), items)
            return "ok"
        order_id = _order_id(terminal, step)
        calls = {
            "open_editor": lambda: terminal.open_editor(order_id, force),
            "add_dishes": lambda: terminal.add_dishes(order_id, items),
            "remove_line": lambda: terminal.remove_line(order_id, str(step["line"])),
            "submit": lambda: terminal.submit(order_id),
            "presettle": lambda: terminal.presettle(order_id, force),
            "unpresettle": lambda: terminal.unpresettle(order_id),
            "checkout": lambda: terminal.checkout(order_id, force),
            "complete_payment": lambda: terminal.complete_payment(order_id),
            "cancel_payment": lambda: terminal.cancel_payment(order_id),
        }
        await calls[action]()
    except Refused as refusal:
        return refusal.code
    return "ok"


async def run_scenario(sim: Simulator, scenario: dict[str, Any], *, say=print) -> list[StepResult]:
    """Play the scenario ``repeat`` times; raises ScenarioFailed at the first unexpected outcome."""
    results: list[StepResult] = []
    for round_ in range(int(scenario.get("repeat", 1))):
        for i, step in enumerate(scenario["step"], 1):
            started = time.perf_counter()
            outcome = await run_step(sim, step)
            result = StepResult(i, step["action"], step.get("terminal"), outcome, time.perf_counter() - started)
            results.append(result)
            expected = step.get("expect", "ok")
            say(f"[{round_ + 1}.{i}] {step.get('terminal', '-')} {step['action']}"
                f" {step.get('table') or step.get('order') or ''}: {outcome} ({result.seconds * 1000:.0f} ms)")
            if outcome != expected:
                raise ScenarioFailed(f"step {i} ({step['action']}): expected {expected}, got {outcome}")
    return results
