-- holder.lua: act on every lock one ERP terminal holds on an order.
--
-- KEYS[1..4] common (lib.lua)   KEYS[5] locks hash tl:{s}:locks:{o}
-- ARGV[1..5] common   ARGV[6] order_id   ARGV[7] terminal_id
-- ARGV[8] op: "revoke" (release with reason revoked) | "disconnect" (cap the expiry)
-- ARGV[9] for disconnect: grace in ms; expiry becomes min(expiry, now + grace)
--
-- Returns {"ok":1,"changed":n,"due":ms|-1}. A completing lock is left alone: its own deadline ends it.
-- Emits lock.expired (reaped), lock.released{revoked}, or lock.renewed for a capped expiry.

local K_LOCKS = KEYS[5]
local order_id, terminal_id, op, grace = ARGV[6], ARGV[7], ARGV[8], tonumber(ARGV[9] or '0')

local held = reap(K_LOCKS, order_id)
local changed = 0
for _, slot in ipairs(held_slots(held)) do
  local lock = held[slot]
  if lock and lock.holder.role == 'erp' and lock.holder.terminal_id == terminal_id
      and not lock.completing then
    if op == 'revoke' then
      end_lock(K_LOCKS, slot, lock, 'lock.released', {reason = 'revoked'})
      changed = changed + 1
    elseif NOW + grace < tonumber(lock.expires_at) then
      lock.expires_at = NOW + grace
      redis.call('HSET', K_LOCKS, slot, encode(lock))
      emit('lock.renewed', lock.table_id, order_id, {lock = public(lock), reason = 'holder_offline'})
      changed = changed + 1
    end
  end
end
return reply({ok = 1, changed = changed, due = index_order(K_LOCKS, order_id)})
