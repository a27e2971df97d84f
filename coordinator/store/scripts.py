"""The one loader of the Lua scripts in ``lua/``: each registered once, by name, on one client.

A lock script is sent as ``lib.lua`` + the rules table generated from ``core/rules.py`` + its
body, so the rule table in Redis is always ``rules.CONFLICTS``. A standalone script (snapshot,
ratelimit, claim_release) is sent as it is: it needs neither the common keys nor the rules.

``Scripts(redis)`` is built once at start-up (``LockEngine`` does it); callers reach it as
``engine.scripts`` and call ``scripts.acquire(keys=..., args=...)``. ``register_script`` only
computes the SHA1: the first call sends EVALSHA and falls back to EVAL on NOSCRIPT.

The KEYS rule: every key a script reads or writes is passed in KEYS (Redis Cluster routes a
script by its keys, and a key outside them is a key the client never told the cluster about).
All keys of one call carry the store's ``{store_id}`` hash tag, so they share one slot.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from importlib import resources
from typing import Any

from redis.commands.core import AsyncScript

from coordinator.core.rules import lua_rules_table

#: Scripts that start with lib.lua and the rules table (the common KEYS[1..4] / ARGV[1..5]).
LOCK_SCRIPTS = (
    "acquire", "renew", "release", "expire", "holder", "put_order", "complete", "emit",
    # provider payments (payments/ledger.py)
    "pay_start", "pay_capture", "pay_confirm", "pay_end", "pay_claim",
    "flush_refusals",
    # table operations, stuck locks, service requests (SPEC §11: store/tableops.py, store/service_desk.py)
    "admin_release", "service", "table_op",
    # split bill (store/share_book.py)
    "share_claim", "share_pay",
)
#: Scripts sent without the prelude: they touch only the keys their callers pass.
STANDALONE_SCRIPTS = ("snapshot", "ratelimit", "claim_release", "ws_slot", "peek")


def _read(name: str) -> str:
    return (resources.files("coordinator.store") / "lua" / f"{name}.lua").read_text()


def source(name: str) -> str:
    """The full text sent to Redis for script ``name``."""
    if name in STANDALONE_SCRIPTS:
        return _read(name)
    if name not in LOCK_SCRIPTS:
        raise KeyError(name)
    return "\n".join([_read("lib"), lua_rules_table(), _read(name)])


@dataclass(frozen=True)
class Scripts:
    """Every tablelock script, registered on one Redis client (single node or cluster)."""

    acquire: AsyncScript
    renew: AsyncScript
    release: AsyncScript
    expire: AsyncScript
    holder: AsyncScript
    put_order: AsyncScript
    complete: AsyncScript
    emit: AsyncScript
    pay_start: AsyncScript
    pay_capture: AsyncScript
    pay_confirm: AsyncScript
    pay_end: AsyncScript
    pay_claim: AsyncScript
    flush_refusals: AsyncScript
    snapshot: AsyncScript
    ratelimit: AsyncScript
    claim_release: AsyncScript
    ws_slot: AsyncScript
    admin_release: AsyncScript
    service: AsyncScript
    table_op: AsyncScript
    share_claim: AsyncScript
    share_pay: AsyncScript
    peek: AsyncScript

    @classmethod
    def register(cls, redis: Any, *, prelude: str = "") -> Scripts:
        """Register every script on ``redis``; ``prelude`` (tests only) is put before each one."""
        return cls(**{
            f.name: redis.register_script(prelude + source(f.name)) for f in fields(cls)
        })

    def by_name(self, name: str) -> AsyncScript:
        """The script called ``name``."""
        if name not in LOCK_SCRIPTS + STANDALONE_SCRIPTS:
            raise KeyError(name)
        script: AsyncScript = getattr(self, name)
        return script


def register(redis: Any) -> Scripts:
    """Register every script on ``redis`` (see ``Scripts.register``)."""
    return Scripts.register(redis)
