"""The store's menu for the diner's page (SPEC §5 ``GET /h5/menu``): from the ERP, cached in Redis.

The menu is asked of the ERP at most once a minute per store; the last one is kept a day and
served while the ERP cannot be reached.
"""

from __future__ import annotations

import json
from typing import Any

from coordinator.core.errors import ErpUnreachable
from coordinator.core.models import Menu
from coordinator.h5.erp_link import ErpLink
from coordinator.h5.table import Diner
from coordinator.store import keys
from coordinator.store.engine import LockEngine, compact

MENU_FRESH_MS = 60_000
MENU_KEEP_SECONDS = 86_400


async def store_menu(redis: Any, engine: LockEngine, erp: ErpLink, diner: Diner) -> Menu:
    """Return the store's menu: the cached one while fresh, else the ERP's (the cached one if it cannot answer)."""
    key = keys.menu(diner.store_id)
    now = await engine.now()
    raw = await redis.get(key)
    cached = json.loads(raw) if raw else None
    if cached is not None and now - cached["fetched_at"] < MENU_FRESH_MS:
        return Menu.model_validate(cached)
    config = await engine.config(diner.store_id)
    try:
        menu = await erp.ask(diner, config, "menu.list", {})
    except ErpUnreachable:
        if cached is None:
            raise
        return Menu.model_validate(cached)
    await redis.set(key, compact({"fetched_at": now, **menu}), ex=MENU_KEEP_SECONDS)
    return Menu.model_validate(menu)
