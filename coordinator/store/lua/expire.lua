-- expire.lua: end an order's locks that are past expires_at (the expiry sweeper calls this).
--
-- KEYS[1..4] common (lib.lua)   KEYS[5] locks hash tl:{s}:locks:{o}
-- ARGV[1..5] common   ARGV[6] order_id
--
-- Returns {"ok":1,"expired":n,"due":ms|-1}: how many locks ended here and the order's next expiry.
-- Exactly once: a lock is deleted in the same atomic step that emits its lock.expired, so a
-- second sweeper (or an acquire that met the lock first) finds nothing to announce.

local K_LOCKS = KEYS[5]
local order_id = ARGV[6]
local before = redis.call('HLEN', K_LOCKS)
local held = reap(K_LOCKS, order_id)
local after = #held_slots(held)
return reply({ok = 1, expired = before - after, due = index_order(K_LOCKS, order_id)})
