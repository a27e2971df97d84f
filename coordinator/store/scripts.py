"""Load the Lua scripts: lib.lua + the rules table generated from rules.py + each body.

Each script is registered once at start-up (``register_script``: EVALSHA with a NOSCRIPT
fallback), so the rule table in Redis is always the one in ``rules.CONFLICTS``.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from coordinator.core.rules import lua_rules_table

NAMES = (
    "acquire", "renew", "release", "expire", "holder", "put_order", "complete", "finish", "emit",
)


def source(name: str) -> str:
    """The full text sent to Redis for script ``name``."""
    lua = resources.files("coordinator.store") / "lua"
    return "\n".join(
        [(lua / "lib.lua").read_text(), lua_rules_table(), (lua / f"{name}.lua").read_text()]
    )


def register(redis: Any) -> dict[str, Any]:
    """Register every script on ``redis``; returns name -> callable Script."""
    return {name: redis.register_script(source(name)) for name in NAMES}
