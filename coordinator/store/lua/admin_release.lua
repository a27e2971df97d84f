-- admin_release.lua: an admin ends stuck locks (SPEC §11), each with lock.released {reason: "admin"}.
--
-- KEYS[1..4] common (lib.lua)   KEYS[5..N_KEYS] locks hash tl:{s}:locks:{o} of each order, in ARGV order
-- (then lib.lua's presence key)
-- ARGV[1..5] common (ARGV[5] is the admin)   ARGV[6] kind to end ("" = every kind)
-- ARGV[7] the admin's reason text   ARGV[8] fence: only that lock ("" = every lock of the kind)
-- ARGV[9..] order ids, one per KEYS[5..]
--
-- Returns {"ok":1,"released":[lock...],"kept":[lock...],"due":ms|-1} (locks without tokens).
-- Share locks (SPEC §10, slots share:<fence>) are payment locks like the whole-order one. A
-- completing lock is kept (the ERP is confirming money for it: ending it would drop a payment the
-- provider already took); its own deadline or the ERP's answer ends it.
-- Emits lock.expired (reaped) and lock.released {reason: "admin", note} for each lock ended: the
-- holder learns it from that event (terminals by the store feed, H5 sessions by their table's).

local kind, note, only = ARGV[6], ARGV[7], tonumber(ARGV[8])
local released, kept = {}, {}
local due = -1
for i = 5, N_KEYS do
  local locks_key, order_id = KEYS[i], ARGV[i + 4]
  local held = reap(locks_key, order_id)
  -- Every slot: edit, the whole-order payment and each split-bill share's own (share:<fence>,
  -- kind payment, SPEC §10), so a diner's stuck share can be ended too.
  for _, slot in ipairs(held_slots(held)) do
    local lock = held[slot]
    if (kind == '' or lock.kind == kind) and (not only or tonumber(lock.fence) == only) then
      if lock.completing or lock.phase == 'completing' then
        table.insert(kept, public(lock))
      else
        end_lock(locks_key, slot, lock, 'lock.released', {reason = 'admin', note = note})
        table.insert(released, public(lock))
      end
    end
  end
  local d = index_order(locks_key, order_id)
  if d >= 0 and (due < 0 or d < due) then due = d end
end
-- Empty lists are left out (encode writes an empty table as {}); the caller defaults them.
return reply({ok = 1, released = released[1] and released or nil, kept = kept[1] and kept or nil, due = due})
