-- release.lua: the holder gives its lock back.
--
-- KEYS[1..4] common (lib.lua)   KEYS[5] locks hash tl:{s}:locks:{o}
-- ARGV[1..5] common   ARGV[6] order_id   ARGV[7] kind   ARGV[8] token
-- Optional (issue 18): KEYS[6] terminals hash, ARGV[9] the terminal's token hash ("" = not checked)
--
-- Returns {"ok":1,"released":true|false,"due":ms|-1,"now":ms} | {"err":"UNAUTHENTICATED"}. false when the token matches no live lock
-- of that kind (already released, expired, forced away) or the lock is completing: a payment the
-- ERP is confirming cannot be withdrawn under it. Emits lock.expired (reaped) / lock.released.

local K_LOCKS = KEYS[5]
local order_id, kind, token = ARGV[6], ARGV[7], ARGV[8]
if not authentic(KEYS[6], ARGV[9]) then return fail('UNAUTHENTICATED') end

local held = reap(K_LOCKS, order_id)
local slot = SLOT[kind]
local lock = held[slot]
local released = false
if lock and lock.kind == kind and lock.token == token and not lock.completing then
  end_lock(K_LOCKS, slot, lock, 'lock.released', {reason = 'released'})
  released = true
end
return reply({ok = 1, released = released, due = index_order(K_LOCKS, order_id), now = NOW})
