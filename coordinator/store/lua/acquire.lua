-- acquire.lua: take an order, presettle or payment lock (SPEC §2), atomically.
--
-- KEYS[1..4] common (lib.lua)
-- KEYS[5] order hash    tl:{s}:order:{o}   fields json, version, status, table_id, fence, ...
-- KEYS[6] locks hash    tl:{s}:locks:{o}   fields edit, pay (lock JSON, with token)
-- KEYS[7] config hash   tl:{s}:config
-- ARGV[1..5] common; ARGV[5] is the actor, who becomes the holder
-- ARGV[6] order_id   ARGV[7] action: modify | presettle | pay   ARGV[8] force: "1" | "0"
-- ARGV[9] expected_version or ""   ARGV[10] new token   ARGV[11] store config JSON defaults
-- Optional (issue 18, one round trip for an ERP terminal): KEYS[8] terminals hash; ARGV[12] the
-- terminal's token hash ("" = not checked here), ARGV[13] "1" = the reply's locks carry holder.online
-- (from the presence zset, the last key: lib.lua) and the reply "now".
--
-- Returns {"ok":1, "lock":Lock+token, "enforced":bool, "forced":[kind...]?, "due":ms|-1}
--      or {"err":"NOT_FOUND"} | {"err":"ORDER_CLOSED","order"} | {"err":"STALE_VERSION","order"}
--      or {"err":"UNAUTHENTICATED"} (ARGV[12] no longer the terminal's token hash)
--      or {"err":"FORBIDDEN"} | {"err":ORDER_LOCKED|PAYMENT_LOCKED|PRESETTLED,"force_allowed","lock"}
-- Emits, in cause order: lock.expired (reaped), lock.released{released} (an own lock re-bound to
-- a newer version), lock.released{converted}, lock.forced, lock.acquired.
-- The fence is next_fence (lib.lua) on the order hash: one per order over all kinds and grants,
-- a hybrid logical clock on the Redis clock so a failover that lost writes cannot repeat one.

local K_ORDER, K_LOCKS, K_CONFIG = KEYS[5], KEYS[6], KEYS[7]
local order_id, action, force = ARGV[6], ARGV[7], ARGV[8] == '1'
local expected = tonumber(ARGV[9])
local me = holder_id(ACTOR)
local kind = ACTION_KIND[action]
if not authentic(KEYS[8], ARGV[12]) then return fail('UNAUTHENTICATED') end
local ONLINE = (ARGV[13] or '') ~= '' and K_PRESENCE and online_terminals() or nil

if ACTOR.role == 'h5' and (force or not H5_ACTIONS[action]) then return fail('FORBIDDEN') end

local o = redis.call('HMGET', K_ORDER, 'json', 'status', 'version', 'table_id')
if not o[1] then return fail('NOT_FOUND') end
if o[2] ~= 'open' then return fail('ORDER_CLOSED', nil, o[1]) end
local version, table_id = tonumber(o[3]), o[4]

local config = store_config(K_CONFIG, ARGV[11])
local seconds = lock_seconds(config, kind, ACTOR.role)

local function new_lock()
  return {kind = kind, order_id = order_id, table_id = table_id, holder = ACTOR,
          fence = next_fence(K_ORDER),
          version = expected or version, acquired_at = NOW, expires_at = NOW + seconds * 1000,
          token = ARGV[10], completing = false}
end

-- Legacy mode: nothing is refused or stored; the fence still advances for the ERP's checks.
if not config.strong_link_enabled then
  return reply({ok = 1, lock = seen_lock(new_lock(), ONLINE), enforced = false, due = -1, now = NOW})
end

local held = reap(K_LOCKS, order_id)

-- Version binding (rules.decide is its pure twin). Own lock of the same kind: hand it back
-- unchanged, unless the asker's version is stale (the binding rule holds for a repeated request
-- too; the lock itself is kept). A holder that has pulled a newer version than its lock is bound
-- to (an H5 checkout after the ERP changed the order) gets a fresh lock bound to it: the old one
-- is released (reason released) once the new one is sure to be granted, first in cause order.
local stale = expected and version > expected
local rebinds = nil
local mine = held[SLOT[kind]]
if mine and mine.kind == kind and holder_id(mine.holder) == me then
  if stale then return fail('STALE_VERSION', nil, o[1]) end
  local bound = tonumber(mine.version)
  if not (expected and bound and expected > bound) or mine.completing then
    return reply({ok = 1, lock = seen_lock(mine, ONLINE), enforced = true, due = index_order(K_LOCKS, order_id),
                  now = NOW})
  end
  rebinds = mine
  held[SLOT[kind]] = nil
end

local converts = nil
if (kind == 'payment' or kind == 'presettle') and held.edit and held.edit.kind == 'order'
    and holder_id(held.edit.holder) == me then
  converts = held.edit
end

local conflicting = {}
for _, k in ipairs(REPORT_ORDER) do
  for _, slot in ipairs(held_slots(held)) do  -- share locks (SPEC §10) are payment locks too
    local lock = held[slot]
    if lock and lock.kind == k and not (k == 'order' and holder_id(lock.holder) == me)
        and CONFLICTS[action][k] then
      table.insert(conflicting, {slot = slot, lock = lock})
    end
  end
end

if #conflicting > 0 then
  local completing = false
  for _, c in ipairs(conflicting) do
    if c.lock.completing then completing = true end
  end
  local erp = ACTOR.role == 'erp'
  if not (erp and force and not completing) then
    return fail(CONFLICTS[action][conflicting[1].lock.kind],
                {force_allowed = erp and not completing,
                 lock = seen_lock(public(conflicting[1].lock), ONLINE)})
  end
end

-- Granted. Version binding is checked before anything is broken.
if stale then return fail('STALE_VERSION', nil, o[1]) end

if rebinds then
  end_lock(K_LOCKS, SLOT[kind], rebinds, 'lock.released', {reason = 'released'})
end
if converts then
  end_lock(K_LOCKS, 'edit', converts, 'lock.released', {reason = 'converted'})
end
local forced = {}
for _, c in ipairs(conflicting) do
  end_lock(K_LOCKS, c.slot, c.lock, 'lock.forced', {by = ACTOR})
  table.insert(forced, c.lock.kind)
end

local lock = new_lock()
redis.call('HSET', K_LOCKS, SLOT[kind], encode(lock))
emit('lock.acquired', table_id, order_id, {lock = public(lock)})
-- forced: the kinds broken (for metrics); left out when none (cjson writes {} for an empty table).
return reply({ok = 1, lock = seen_lock(lock, ONLINE), enforced = true, forced = forced[1] and forced or nil,
              due = index_order(K_LOCKS, order_id), now = NOW})
