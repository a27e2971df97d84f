"""Which open order is a table's (``core/tables.py``): pure, with literal open-order indexes."""

from __future__ import annotations

from coordinator.core.tables import current_order, table_order_ids

OPEN = {"o1": ("T1", 1_000), "o2": ("T2", 5_000), "o3": ("T1", 3_000), "o4": ("T1", 2_000)}


def test_the_most_recently_opened_order_is_the_tables():
    """Of a table's open orders, the one opened last is its current order."""
    assert current_order(OPEN, "T1") == "o3"
    assert current_order(OPEN, "T2") == "o2"


def test_a_table_without_open_orders_has_none():
    """No open order on the table (or no table at all): None."""
    assert current_order(OPEN, "T9") is None and current_order({}, "T1") is None


def test_open_orders_come_newest_first():
    """table_order_ids lists only the table's orders, most recently opened first."""
    assert table_order_ids(OPEN, "T1") == ["o3", "o4", "o1"]


def test_orders_opened_in_the_same_millisecond_pick_the_greater_id():
    """A tie on opened_at is broken by order_id, the same way everywhere (engine, stream, H5)."""
    assert current_order({"a": ("T1", 7), "b": ("T1", 7)}, "T1") == "b"
