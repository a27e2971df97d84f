"""``bounded_refusal`` (lib.lua, through emit.lua mode "refusal": ``LockEngine.emit_refusal``, as
h5/addons.py records a refused add-on) decides as its pure twin ``core/refusals.record``: generated
sequences of refused H5 requests (sessions, codes, orders) on a real Redis, single node and cluster,
give the same written refusals and the same counted entries.

Windows do not roll within a sequence here (the Redis clock cannot be injected);
``tests/test_security_audit_flood.py`` pins the roll.
"""

from __future__ import annotations

import json
import random

import pytest

from coordinator.core import refusals
from coordinator.core.models import OrderIn, StoreConfig
from coordinator.settings import load_store_defaults
from coordinator.store import keys
from coordinator.store.engine import LockEngine
from tests.support.app import SYSTEM, order_body

WINDOW_MS, CAP = 600_000, 3


def _sequences(n: int) -> list[list[tuple[str, str, str]]]:
    """n generated sequences of (session, order, code) refusals of one table's add-ons."""
    rng = random.Random(15)
    return [[(f"s{rng.randrange(5)}", rng.choice(["o1", "o2"]), rng.choice(["PAYMENT_LOCKED", "PRESETTLED"]))
             for _ in range(rng.randrange(1, 25))]
            for _ in range(n)]


def _group(entries: list[refusals.Counted]) -> tuple[str, frozenset]:
    """One drain of counted entries (Lua writes a drain's orders in hash order: compared as a set)."""
    return ("counted", frozenset((e.order_id, tuple(sorted(e.codes.items()))) for e in entries))


@pytest.mark.parametrize("case", range(12))
async def test_lua_bound_agrees_with_the_pure_twin(redis_client, uid, case):
    """The audit log holds exactly what record() prescribes, in order: each refusal written or counted,
    each drain of counted refusals before the written refusal that triggered it, the rest at the flush."""
    engine = LockEngine(redis_client, defaults=StoreConfig.model_validate(load_store_defaults()),
                        refusal_window_ms=WINDOW_MS, refusals_per_table=CAP)
    store_id = f"twin-{uid}-{case}"
    await engine.put_order(store_id, OrderIn.model_validate(order_body("o1")), SYSTEM)
    await engine.put_order(store_id, OrderIn.model_validate(order_body("o2")), SYSTEM)
    window: refusals.RefusalWindow | None = None
    expected: list[tuple] = []
    for session_id, order_id, code in _sequences(12)[case]:
        await engine.emit_refusal(store_id, "order.addon_refused", {"code": code},
                                  {"role": "h5", "session_id": session_id}, table_id="T1", order_id=order_id,
                                  code=code)
        window, flushed, written = refusals.record(window, now=0, window_ms=WINDOW_MS, cap=CAP,
                                                   session_id=session_id, order_id=order_id, code=code)
        if flushed:
            expected.append(_group(flushed))
        if written:
            expected.append(("refused", order_id, code))
    await engine.flush_refusals(store_id)
    if window is not None and (last := refusals.flush(window, now=0, window_ms=WINDOW_MS)[1]):
        expected.append(_group(last))

    actual: list[tuple] = []
    drain: list[refusals.Counted] = []
    for _, fields in await redis_client.xrange(keys.audit(store_id)):
        event = json.loads(fields[b"e"])
        if event["name"] == "h5.refused_counted":
            assert event["data"]["count"] == sum(event["data"]["codes"].values())
            drain.append(refusals.Counted(event["order_id"], event["data"]["codes"], event["data"]["from_ms"]))
            continue
        if drain:
            actual.append(_group(drain))
            drain = []
        if event["name"] == "order.addon_refused":
            actual.append(("refused", event["order_id"], event["data"]["code"]))
    if drain:
        actual.append(_group(drain))
    assert actual == expected
