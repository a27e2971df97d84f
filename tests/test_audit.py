"""The audit reader (coordinator/audit.py): pure pieces with literal data, paging on a real Redis."""

from __future__ import annotations

import json

import pytest

from coordinator.core.models import AuditEntry
from coordinator.store import audit, keys
from coordinator.store.audit import (
    AuditFilter,
    build_cases,
    flag_reasons,
    parse_entry,
    read_page,
    reconcile,
    xrange_bounds,
)

ERP = {"role": "erp", "terminal_id": "Ta", "name": "收银台"}
H5 = {"role": "h5", "session_id": "sess1"}


def event(name: str, ts: int, order_id: str | None = None, data: dict | None = None, table_id: str | None = "T1",
          kind: str = "event") -> dict:
    """An event as the Lua scripts write it to the audit stream's ``e`` field."""
    return {"type": kind, "seq": 0, "ts": ts, "name": name, "store_id": "s", "table_id": table_id,
            "order_id": order_id, "data": data if data is not None else {}}


def fields(ev: dict, actor: dict | None = None) -> dict[bytes, bytes]:
    """The raw stream fields of one audit entry."""
    return {b"e": json.dumps(ev, separators=(",", ":")).encode(),
            b"actor": json.dumps(actor or {"role": "system"}, separators=(",", ":")).encode()}


def entry(name: str, ts: int, order_id: str | None = "o1", data: dict | None = None, sid: str | None = None) -> AuditEntry:
    """A parsed audit entry."""
    return parse_entry(sid or f"{ts}-0", fields(event(name, ts, order_id, data)))


def lock(kind: str) -> dict:
    """A public lock of ``kind`` on o1."""
    return {"kind": kind, "order_id": "o1", "table_id": "T1", "holder": H5, "fence": 1, "version": 1,
            "acquired_at": 0, "expires_at": 15_000, "completing": False}


# --- pure -------------------------------------------------------------------------------------


def test_parse_entry_reads_event_and_actor():
    """A raw stream entry becomes an AuditEntry with id, ts, name, actor, ids and data."""
    got = parse_entry(b"1700000000000-3", fields(event("lock.acquired", 1_700_000_000_001, "o1", {"lock": lock("order")}), ERP))
    assert got.id == "1700000000000-3"
    assert (got.ts, got.name, got.order_id, got.table_id) == (1_700_000_000_001, "lock.acquired", "o1", "T1")
    assert got.actor == ERP and got.data["lock"]["kind"] == "order"


def test_parse_entry_treats_empty_lua_table_as_no_data():
    """cjson may write empty data as [] (an empty Lua table); the entry still has an empty dict."""
    raw = fields(event("qr.rotated", 5, None, kind="audit"))
    raw[b"e"] = raw[b"e"].replace(b'"data":{}', b'"data":[]')
    got = parse_entry("5-0", raw)
    assert got.data == {} and got.order_id is None


def test_filter_matches_order_kind_and_inclusive_window():
    """AuditFilter keeps exactly the entries of the order, the lock kind and the [from, to] window."""
    forced = entry("lock.forced", 100, "o1", {"lock": lock("payment"), "by": ERP})
    other_order = entry("lock.forced", 100, "o2", {"lock": lock("payment")})
    no_lock = entry("order.updated", 100, "o1", {"order": {}})
    assert AuditFilter(order_id="o1").matches(forced) and not AuditFilter(order_id="o1").matches(other_order)
    assert AuditFilter(kind="payment").matches(forced) and not AuditFilter(kind="order").matches(forced)
    assert not AuditFilter(kind="payment").matches(no_lock)
    assert AuditFilter(from_ms=100, to_ms=100).matches(forced)
    assert not AuditFilter(from_ms=101).matches(forced) and not AuditFilter(to_ms=99).matches(forced)


def test_xrange_bounds_widen_the_window_and_respect_the_cursor():
    """The window becomes id bounds widened by the clock slack; a later cursor wins and is exclusive."""
    slack = audit.CLOCK_SLACK_MS
    assert xrange_bounds(None, None, None) == ("-", "+")
    assert xrange_bounds(None, 100_000, 200_000) == (f"{100_000 - slack}-0", str(200_000 + slack))
    assert xrange_bounds(None, 10, None) == ("0-0", "+")
    assert xrange_bounds("150000-2", 100_000, None) == ("(150000-2", "+")
    assert xrange_bounds("1-0", 100_000, None) == (f"{100_000 - slack}-0", "+")
    assert xrange_bounds("7-1", None, None) == ("(7-1", "+")


def test_flag_reasons_name_why_an_order_needs_a_look():
    """A forced payment lock and each kind of refused completion map to their reconciliation reason."""
    assert flag_reasons(entry("lock.forced", 1, data={"lock": lock("payment")})) == ["forced_during_payment"]
    assert flag_reasons(entry("lock.forced", 1, data={"lock": lock("order")})) == []
    assert flag_reasons(entry("payment.rejected", 1, data={"code": "AMOUNT_MISMATCH"})) == ["amount_mismatch"]
    assert flag_reasons(entry("payment.rejected", 1, data={"code": "STALE_VERSION"})) == ["version_mismatch"]
    assert flag_reasons(entry("payment.rejected", 1, data={"code": "LOCK_LOST"})) == ["payment_rejected"]
    assert flag_reasons(entry("lock.released", 1, data={"lock": lock("payment"), "reason": "paid"})) == []


def test_build_cases_groups_by_order_in_flag_order():
    """Cases come in the order first flagged, reasons deduplicated in a fixed order, with their trails."""
    flags = [
        entry("payment.rejected", 5, "o2", {"code": "AMOUNT_MISMATCH"}),
        entry("lock.forced", 6, "o1", {"lock": lock("payment")}),
        entry("payment.rejected", 7, "o2", {"code": "LOCK_LOST"}),
        entry("payment.rejected", 8, "o2", {"code": "AMOUNT_MISMATCH"}),
    ]
    trails = {"o1": [flags[1]], "o2": [flags[0], flags[2], flags[3]]}
    cases = build_cases(flags, trails)
    assert [c.order_id for c in cases] == ["o2", "o1"]
    assert cases[0].reasons == ["payment_rejected", "amount_mismatch"]
    assert cases[0].table_id == "T1" and len(cases[0].trail) == 3
    assert cases[1].reasons == ["forced_during_payment"]


# --- on Redis ---------------------------------------------------------------------------------


async def seed(redis, store_id: str, rows: list[tuple[str, dict]]) -> list[str]:
    """XADD the entries with explicit ids (so times are known); returns the ids."""
    for sid, ev in rows:
        await redis.xadd(keys.audit(store_id), fields(ev), id=sid)
    return [sid for sid, _ in rows]


async def all_pages(redis, store_id: str, limit: int, where: AuditFilter = AuditFilter(), **kw) -> list[list[AuditEntry]]:
    """Follow ``next`` from the start until it is None."""
    pages, after = [], None
    for _ in range(1000):
        page = await read_page(redis, store_id, after=after, limit=limit, where=where, **kw)
        pages.append(page.entries)
        if page.next is None:
            return pages
        after = page.next
    raise AssertionError("paging never ended")


async def test_pages_return_every_entry_once(redis_client, uid):
    """Paging without filters returns every entry exactly once, oldest first, and ends with next None."""
    ids = await seed(redis_client, uid, [(f"{1000 + i}-0", event("lock.acquired", 1000 + i, f"o{i % 3}")) for i in range(23)])
    pages = await all_pages(redis_client, uid, limit=5)
    got = [e.id for page in pages for e in page]
    assert got == ids
    assert all(len(p) == 5 for p in pages[:4])


async def test_filtered_pages_are_full_and_exact(redis_client, uid):
    """With an order filter, pages stay full (reading on past non-matches) and hold only that order."""
    rows = []
    for i in range(60):
        data = {"lock": lock("payment" if i % 4 == 0 else "order")}
        rows.append((f"{2000 + i}-0", event("lock.acquired", 2000 + i, "o1" if i % 6 == 0 else "o2", data)))
    await seed(redis_client, uid, rows)
    pages = await all_pages(redis_client, uid, limit=3, where=AuditFilter(order_id="o1"), batch=4)
    assert [len(p) for p in pages[:-1]] == [3] * (len(pages) - 1)
    got = [e.id for page in pages for e in page]
    assert got == [sid for sid, ev in rows if ev["order_id"] == "o1"]
    kinds = await all_pages(redis_client, uid, limit=100, where=AuditFilter(order_id="o2", kind="payment"))
    assert [e.id for p in kinds for e in p] == [
        sid for sid, ev in rows if ev["order_id"] == "o2" and ev["data"]["lock"]["kind"] == "payment"]


async def test_budget_bounds_the_work_of_one_page(redis_client, uid):
    """A page that examined its budget answers early with a cursor, and following it still finds everything."""
    rows = [(f"{3000 + i}-0", event("lock.acquired", 3000 + i, "o9" if i == 45 else "o1")) for i in range(50)]
    await seed(redis_client, uid, rows)
    first = await read_page(redis_client, uid, limit=10, where=AuditFilter(order_id="o9"), batch=8, budget=20)
    assert first.entries == [] and first.next == "3019-0"
    pages = await all_pages(redis_client, uid, limit=10, where=AuditFilter(order_id="o9"), batch=8, budget=20)
    assert [e.id for p in pages for e in p] == ["3045-0"]


async def test_time_window_is_exact_even_when_ids_stray_from_ts(redis_client, uid):
    """from/to select by ts inclusively even where an id's time differs from its ts by a few ms."""
    # ts 10_000 stored under an earlier id time, ts 10_002 under a later one: both sit at the edges.
    rows = [("9000-0", event("a", 9_000)), ("9998-0", event("edge-from", 10_000)),
            ("10001-0", event("inside", 10_001)), ("10005-0", event("edge-to", 10_002)),
            ("10006-0", event("after", 10_006))]
    await seed(redis_client, uid, rows)
    page = await read_page(redis_client, uid, limit=100, where=AuditFilter(from_ms=10_000, to_ms=10_002))
    assert [e.name for e in page.entries] == ["edge-from", "inside", "edge-to"] and page.next is None


async def test_reconcile_finds_flagged_orders_with_their_trails(redis_client, uid):
    """reconcile lists forced payments and refused completions in the window, each with its whole trail there."""
    rows = [
        ("100000-0", event("lock.acquired", 100_000, "o1", {"lock": lock("payment")})),
        ("100001-0", event("lock.forced", 100_001, "o1", {"lock": lock("payment"), "by": ERP})),
        ("100002-0", event("lock.forced", 100_002, "o2", {"lock": lock("order"), "by": ERP})),
        ("100003-0", event("payment.rejected", 100_003, "o3", {"code": "STALE_VERSION", "lock": None})),
        ("100004-0", event("order.paid", 100_004, "o2", {"payment_ref": "p"})),
        ("100005-0", event("lock.released", 100_005, "o1", {"lock": lock("order"), "reason": "released"})),
        ("900000-0", event("payment.rejected", 900_000, "o4", {"code": "AMOUNT_MISMATCH"})),
    ]
    await seed(redis_client, uid, rows)
    cases = await reconcile(redis_client, uid, 100_000, 200_000)
    assert [(c.order_id, c.reasons) for c in cases] == [("o1", ["forced_during_payment"]), ("o3", ["version_mismatch"])]
    assert [e.name for e in cases[0].trail] == ["lock.acquired", "lock.forced", "lock.released"]
    assert await reconcile(redis_client, uid, 0, 99_999) == []


async def test_reconcile_decodes_everything_when_many_orders_are_flagged(redis_client, uid):
    """Past the byte-test limit the trail pass still gathers exactly the flagged orders' entries."""
    n = audit._MAX_BYTE_TESTS + 3
    rows = []
    for i in range(n):
        rows.append((f"{50_000 + 2 * i}-0", event("payment.rejected", 50_000 + 2 * i, f"o{i}", {"code": "LOCK_LOST"})))
        rows.append((f"{50_001 + 2 * i}-0", event("order.updated", 50_001 + 2 * i, f"o{i}", {"order": {}})))
    rows.append(("60000-0", event("order.updated", 60_000, "unflagged", {})))
    await seed(redis_client, uid, rows)
    cases = await reconcile(redis_client, uid, 0, 70_000)
    assert len(cases) == n
    assert all([e.name for e in c.trail] == ["payment.rejected", "order.updated"] for c in cases)


@pytest.mark.parametrize("bad", ["", "x", "12", "1-2-3"])
def test_stream_cursor_shape_is_validated(bad):
    """An ``after`` that is not <ms>-<seq> is a 400, never handed to XRANGE."""
    from pydantic import ValidationError

    from coordinator.core.models import AuditQuery

    with pytest.raises(ValidationError):
        AuditQuery.model_validate({"after": bad})
