"""The Lua scripts as a set: one loader registers every file once, each opens with its header, and
every key a script touches is one it was given in KEYS (single node and cluster)."""

from __future__ import annotations

import re
from importlib import resources

import pytest
from redis.exceptions import ResponseError

from coordinator.core.models import OrderIn, StoreConfig
from coordinator.core.rules import Kind
from coordinator.store import keys
from coordinator.store.engine import SYSTEM, LockEngine
from coordinator.store.ratelimit import RateLimiter
from coordinator.store.redis_conn import AnyRedis
from coordinator.store.service_desk import ServiceDesk
from coordinator.store.tableops import TableOps
from coordinator.store.scripts import LOCK_SCRIPTS, STANDALONE_SCRIPTS, Scripts, source
from coordinator.store.snapshot import read_snapshot
from tests.support.app import order_body

A = {"role": "erp", "terminal_id": "TA", "name": "收银台"}
B = {"role": "erp", "terminal_id": "TB", "name": "服务员B"}
H = {"role": "h5", "session_id": "h1"}
LUA = resources.files("coordinator.store") / "lua"

#: Put before every script in these tests: a local ``redis`` whose call refuses a key not in KEYS
#: (the global one is read-only). Redis itself only refuses keys of another cluster slot, so a
#: same-slot undeclared key would pass unnoticed.
KEY_GUARD = """
local __declared = {}
for _, k in ipairs(KEYS) do __declared[k] = true end
local __keyless = {TIME = true, PUBLISH = true}
local __redis = redis
local redis = setmetatable({call = function(command, ...)
  local key = select(1, ...)
  if not __keyless[string.upper(command)] and not __declared[key] then
    error('undeclared key ' .. tostring(key) .. ' in ' .. command)
  end
  return __redis.call(command, ...)
end}, {__index = __redis})
"""


def lua_files() -> set[str]:
    """The names of the script files (lib.lua is the prelude, not a script)."""
    return {p.name.removesuffix(".lua") for p in LUA.iterdir() if p.name.endswith(".lua")} - {"lib"}


def test_every_lua_file_is_registered_once_by_name() -> None:
    """Each .lua file is a field of Scripts, listed once as a lock script or a standalone one."""
    names = LOCK_SCRIPTS + STANDALONE_SCRIPTS
    assert len(names) == len(set(names))
    assert set(names) == lua_files() == set(Scripts.__dataclass_fields__)


@pytest.mark.parametrize("name", sorted(lua_files()))
def test_every_script_opens_with_keys_argv_and_returns(name: str) -> None:
    """A script's leading comment names its KEYS, its ARGV and what it returns."""
    header = re.match(r"(?:--.*\n)+", (LUA / f"{name}.lua").read_text())
    assert header is not None
    assert all(word in header.group() for word in ("KEYS[", "ARGV[", "Returns"))


def test_lock_scripts_get_the_prelude_and_standalone_ones_do_not() -> None:
    """lib.lua and the rules table go before the lock scripts only."""
    assert "local CONFLICTS" in source("acquire") and "local function emit" in source("put_order")
    assert "local CONFLICTS" not in source("snapshot") and "local function" not in source("ratelimit")
    with pytest.raises(KeyError):
        source("lib")


async def test_the_key_guard_refuses_an_undeclared_key(redis_client: AnyRedis, uid: str) -> None:
    """The guard these tests rely on does catch a script reading a key it was not given."""
    sneaky = redis_client.register_script(KEY_GUARD + "return redis.call('GET', KEYS[1] .. ':other')")
    with pytest.raises(ResponseError, match="undeclared key"):
        await sneaky(keys=[f"tl:{{{uid}}}:x"])


async def test_every_script_touches_only_its_declared_keys(redis_client: AnyRedis, uid: str) -> None:
    """A workload through every script, each guarded, meets no undeclared key."""
    engine = LockEngine(redis_client, defaults=StoreConfig())
    scripts = engine.scripts = Scripts.register(redis_client, prelude=KEY_GUARD)
    store = f"s-{uid}"

    async def put(order_id: str, **fields: object) -> None:
        await engine.put_order(store, OrderIn.model_validate(order_body(order_id, **fields)), A)

    await put("o1")
    await put("o2", table_id="T2")
    lock, _ = await engine.acquire(store, "o1", A, Kind.ORDER)
    await engine.renew(store, "o1", Kind.ORDER, lock["token"], A)
    await engine.acquire(store, "o1", B, Kind.ORDER, force=True)
    await engine.terminal_offline(store, "TB", 0)
    await engine.expire(store, "o1")
    paying, _ = await engine.acquire(store, "o1", A, Kind.PAYMENT, expected_version=1)
    snap = await read_snapshot(scripts, store)
    assert len(snap.orders) == 2 and len(snap.locks) == 1
    await engine.complete(store, "o1", A, token=paying["token"], amount_cents=3800, version=1, payment_ref="p1")
    h5_lock, _ = await engine.acquire(store, "o2", H, Kind.PAYMENT)
    await engine.release(store, "o2", Kind.PAYMENT, h5_lock["token"], H)
    edit, _ = await engine.acquire(store, "o2", A, Kind.ORDER)
    await engine.release(store, "o2", Kind.ORDER, edit["token"], A)
    await engine.acquire(store, "o2", B, Kind.PRESETTLE)
    await engine.revoke_terminal(store, "TB")
    await engine.emit(store, "config.updated", {"changed": ["x"]}, SYSTEM)
    await engine.emit(store, "terminal.note", {}, SYSTEM, audit_only=True)
    desk = ServiceDesk(engine)
    asked = await desk.request(store, "T2", "water", H)
    await desk.take(store, asked["id"], A)
    ops = TableOps(engine)
    await ops.admin_release(store, ["o2"], "", "stuck", {"role": "admin"})
    await put("o3", table_id="T3")
    begun = await ops.begin(store, "merge", ["o2", "o3"], B, force=True)
    await ops.finish(store, "merge", "o2", begun["orders"], B)
    await put("o2", table_id="T2", version=2, status="cancelled")
    await RateLimiter(session_rate=1, h5_rate=1).hit(scripts, keys.rate_session(store, "h1"), 1)
    claim = keys.item_request(store, "r1")
    await redis_client.set(claim, "mine")
    assert await scripts.claim_release(keys=[claim], args=["mine"]) == 1
    await put("o3", table_id="T3", version=2, status="cancelled")
    snap = await read_snapshot(scripts, store)
    assert snap.orders == [] and snap.locks == []


async def test_snapshot_reads_nothing_until_its_declared_orders_cover_the_store(
    redis_client: AnyRedis, uid: str
) -> None:
    """snapshot.lua returns the lists to declare while an open or locked order is undeclared; a declared
    order that closed meanwhile is skipped, and the read then is the whole store."""
    engine = LockEngine(redis_client, defaults=StoreConfig())
    store = f"s-{uid}"
    common = [keys.seq(store), keys.open_orders(store), keys.active(store)]
    for order_id in ("o1", "o2"):
        await engine.put_order(store, OrderIn.model_validate(order_body(order_id)), A)
    await engine.acquire(store, "o2", A, Kind.ORDER)
    retry = await engine.scripts.snapshot(keys=[*common, keys.order(store, "o1")], args=[1, 0, "o1"])
    assert retry[0] == -1 and sorted(retry[1]) == [b"o1", b"o2"] and retry[2] == [b"o2"]
    declared = ["o1", "o2", "o9"]  # o9: listed earlier, closed since
    reply = await engine.scripts.snapshot(
        keys=[*common, *(keys.order(store, o) for o in declared), keys.locks(store, "o2")],
        args=[3, 1, *declared, "o2"],
    )
    assert reply[0] == await engine.seq(store) and len(reply[3]) == 2 and len(reply[4]) == 1
    snap = await read_snapshot(engine.scripts, store)
    assert (snap.seq, sorted(snap.orders), snap.locks) == (reply[0], sorted(reply[3]), reply[4])
