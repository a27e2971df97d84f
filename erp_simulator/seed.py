"""The demo restaurant: its tables, its menu and the order already open on T1."""

from __future__ import annotations

from .db import ErpDatabase

TABLES: tuple[tuple[str, str], ...] = (("T1", "一号桌"), ("T2", "二号桌"), ("T3", "三号桌"), ("T4", "四号桌"))

MENU: tuple[tuple[str, str, int], ...] = (
    ("tea", "茉莉花茶", 800),
    ("rice", "米饭", 300),
    ("kungpao", "宫保鸡丁", 4200),
    ("mapo", "麻婆豆腐", 2800),
    ("greens", "清炒时蔬", 2200),
    ("soup", "番茄蛋汤", 1800),
    ("dumplings", "猪肉水饺", 3200),
    ("beer", "青岛啤酒", 1200),
)

#: What the open order on T1 holds when the demo starts.
T1_ORDER = ({"sku": "tea", "qty": 2}, {"sku": "kungpao", "qty": 1}, {"sku": "rice", "qty": 2})


def seed(db: ErpDatabase, *, open_table: str | None = "T1") -> dict | None:
    """Put the demo tables and menu in ``db`` and open an order on ``open_table`` unless one is open."""
    for table_id, name in TABLES:
        db.put_table(table_id, name)
    for sku, name, price in MENU:
        db.put_dish(sku, name, price)
    if open_table is None:
        return None
    return db.table_order(open_table) or db.open_order(open_table, T1_ORDER)
