-- share_pay.lua: end, capture or confirm a split-bill share held under its own payment lock (SPEC §10).
--
-- KEYS[1..4] common (lib.lua)   KEYS[5] order hash   KEYS[6] locks hash   KEYS[7] open orders hash
-- KEYS[8] payment refs hash tl:{s}:payrefs (payment_ref -> order_id: a ref is unique per store, SPEC §9)
-- ARGV[1..5] common   ARGV[6] order_id   ARGV[7] token of the share lock
-- ARGV[8] mode:
--   "release" | "payment_failed"  end the share lock (not while completing) → {"ok":1,"released":bool}
--   "self"     an ERP terminal paying its own share (it is the ERP): check and mark paid at once
--   "begin"    check and mark the lock completing (can neither expire nor be forced before now +
--              window) while the ERP confirms the share → {"ok":1,"paid":false,"lock"}
--   "paid"     the ERP confirmed the completing share → mark it paid
--   "rejected" the ERP refused or did not answer → the lock ends (released), payment.rejected
-- ARGV[9] amount_cents   ARGV[10] version   ARGV[11] payment_ref   ARGV[12] window ms   ARGV[13] code
--
-- Returns {"ok":1,...} as above, or {"err":CODE[,"order"]} (below).
-- Marking a share paid: it joins the order's `shares` (without holder: the H5 viewers of the table
-- see who paid nothing but "someone"), `paid_cents` grows, the lock ends (lock.released{paid}),
-- share.paid {share, paid_cents, remaining_cents, order} is emitted; when paid_cents reaches the
-- total the order is paid (mark_paid: every other lock ends, reason paid, then order.paid).
-- Idempotent on payment_ref (order hash field ref:<payment_ref>) → {"ok":1,"paid":true,"replay":true}.
-- Refusals (emit payment.rejected, except PAYMENT_LOCKED): PAYMENT_REF_REUSED (the ref paid another
-- order of the store), LOCK_LOST (no live share lock with this
-- token of this holder), STALE_VERSION (the order or the bound version moved), AMOUNT_MISMATCH.

local K_ORDER, K_LOCKS, K_OPEN, K_REFS = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local order_id, token, mode = ARGV[6], ARGV[7], ARGV[8]
local amount, version, payment_ref = tonumber(ARGV[9]), tonumber(ARGV[10]), ARGV[11]
local window = tonumber(ARGV[12]) or 0

local o = redis.call('HMGET', K_ORDER, 'json', 'status', 'version', 'total', 'table_id', 'body',
                     'paid_cents', 'shares')
if not o[1] then return fail('NOT_FOUND') end
local table_id, total = o[5], tonumber(o[4])
if payment_ref ~= '' and redis.call('HEXISTS', K_ORDER, 'ref:' .. payment_ref) == 1 then
  return reply({ok = 1, paid = true, replay = true}, o[1])
end

local held = reap(K_LOCKS, order_id)
local slot, lock = nil, nil
for _, s in ipairs(held_slots(held)) do
  if held[s].share and held[s].token == token and holder_id(held[s].holder) == holder_id(ACTOR) then
    slot, lock = s, held[s]
  end
end

if mode == 'release' or mode == 'payment_failed' then
  local released = lock ~= nil and not lock.completing
  if released then
    end_lock(K_LOCKS, slot, lock, 'lock.released', {reason = mode == 'release' and 'released' or 'payment_failed'})
  end
  return reply({ok = 1, released = released, due = index_order(K_LOCKS, order_id)})
end

local function refuse(code, with_order)
  reject_payment(table_id, order_id, code, payment_ref, amount, version, lock)
  return fail(code, nil, with_order and o[1] or nil)
end

if o[2] ~= 'open' then return refuse('ORDER_CLOSED', true) end
local used_by = payment_ref ~= '' and redis.call('HGET', K_REFS, payment_ref)
if used_by and used_by ~= order_id then return refuse('PAYMENT_REF_REUSED', false) end
if not lock then return refuse('LOCK_LOST', false) end

if mode == 'rejected' then
  if not lock.completing then return refuse('LOCK_LOST', false) end
  reject_payment(table_id, order_id, ARGV[13] ~= '' and ARGV[13] or 'ERP_REFUSED', payment_ref, amount, version, lock)
  end_lock(K_LOCKS, slot, lock, 'lock.released', {reason = 'released'})
  return reply({ok = 1, paid = false, due = index_order(K_LOCKS, order_id)})
end

if mode == 'paid' then
  if not lock.completing then return refuse('LOCK_LOST', false) end
else
  if lock.completing then return fail('PAYMENT_LOCKED') end
  if version ~= tonumber(lock.version) or tonumber(o[3]) ~= tonumber(lock.version) then
    return refuse('STALE_VERSION', true)
  end
  if amount ~= tonumber(lock.share.amount_cents) then return refuse('AMOUNT_MISMATCH', true) end
end

if mode == 'begin' then
  lock.completing = true
  lock.payment_ref = payment_ref
  lock.amount_cents = amount
  if tonumber(lock.expires_at) < NOW + window then lock.expires_at = NOW + window end
  redis.call('HSET', K_LOCKS, slot, encode(lock))
  emit('lock.renewed', table_id, order_id, {lock = public(lock), reason = 'completing'})
  return reply({ok = 1, paid = false, lock = lock, due = index_order(K_LOCKS, order_id)})
end

-- Mark the share paid (modes self and paid).
redis.call('HSET', K_REFS, payment_ref, order_id)
local json, order_paid = mark_share_paid(K_ORDER, K_LOCKS, K_OPEN, order_id, held, slot, payment_ref)
if order_paid then return reply({ok = 1, paid = true, order_paid = true}, json) end
return reply({ok = 1, paid = true, order_paid = false, due = index_order(K_LOCKS, order_id)}, json)
