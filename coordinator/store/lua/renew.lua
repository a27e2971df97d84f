-- renew.lua: extend an ERP holder's lock to now + the kind's duration.
--
-- KEYS[1..4] common (lib.lua)   KEYS[5] locks hash tl:{s}:locks:{o}   KEYS[6] config hash
-- ARGV[1..5] common   ARGV[6] order_id   ARGV[7] kind   ARGV[8] token   ARGV[9] config JSON defaults
-- Optional (issue 18): KEYS[7] terminals hash, ARGV[10] the terminal's token hash ("" = not checked),
-- ARGV[11] "1" = the reply's holder carries `online` (from the presence zset, the last key: lib.lua).
--
-- Returns {"ok":1,"lock":Lock+token,"due":ms} | {"err":"LOCK_LOST"} | {"err":"UNAUTHENTICATED"}
-- | {"err":"FORBIDDEN"} (H5 locks are not renewable). A completing lock is handed back unchanged: its deadline is the RPC's.
-- Emits lock.expired (if the lock was found past expiry) or lock.renewed.

local K_LOCKS, K_CONFIG = KEYS[5], KEYS[6]
local order_id, kind, token = ARGV[6], ARGV[7], ARGV[8]
if not authentic(KEYS[7], ARGV[10]) then return fail('UNAUTHENTICATED') end
local ONLINE = (ARGV[11] or '') ~= '' and K_PRESENCE and online_terminals() or nil

local held = reap(K_LOCKS, order_id)
local slot = SLOT[kind]
local lock = held[slot]
if not lock or lock.kind ~= kind or lock.token ~= token then
  index_order(K_LOCKS, order_id)
  return fail('LOCK_LOST')
end
if lock.holder.role ~= 'erp' then return fail('FORBIDDEN') end
if lock.completing then
  return reply({ok = 1, lock = seen_lock(lock, ONLINE), due = index_order(K_LOCKS, order_id), now = NOW})
end

local seconds = lock_seconds(store_config(K_CONFIG, ARGV[9]), kind, lock.holder.role)
lock.expires_at = NOW + seconds * 1000
redis.call('HSET', K_LOCKS, slot, encode(lock))
emit('lock.renewed', lock.table_id, order_id, {lock = public(lock)})
return reply({ok = 1, lock = seen_lock(lock, ONLINE), due = index_order(K_LOCKS, order_id), now = NOW})
