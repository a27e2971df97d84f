-- complete.lua: an ERP terminal completes its own payment against the payment lock it holds (SPEC §2):
-- it is the ERP (cash, card terminal), so checking and marking the order paid are one step.
-- (A diner's payment is completed by the provider's notification: pay_capture.lua, pay_confirm.lua.)
--
-- KEYS[1..4] common (lib.lua)   KEYS[5] order hash   KEYS[6] locks hash   KEYS[7] open orders hash
-- KEYS[8] config hash   KEYS[9] payment refs hash tl:{s}:payrefs (payment_ref -> order_id)
-- ARGV[1..5] common   ARGV[6] order_id   ARGV[7] token   ARGV[8] amount_cents   ARGV[9] version
-- ARGV[10] payment_ref   ARGV[11] store config JSON defaults
-- The amount must be what remains due: the total less the paid shares' paid_cents (SPEC §10).
--
-- Returns {"ok":1,"paid":true,"order"}.
-- Idempotent on payment_ref: a replay after the order is paid with that ref → {"ok":1,"paid":true,
-- "replay":true,"order"}. Refusals emit payment.rejected (staff actions: every one is written) and
-- return {"err":CODE[,"order"]}: NOT_FOUND, ORDER_CLOSED, LOCK_LOST (stale, expired, forced-away or
-- foreign token), STALE_VERSION, AMOUNT_MISMATCH, PAYMENT_REF_REUSED (the ref paid another order of
-- the store, SPEC §9); PAYMENT_LOCKED (not recorded) while a provider payment is completing.
-- The token must be the caller's own: a live lock's token presented by another client is foreign.
-- Legacy mode (strong_link_enabled false) stores no lock, so none is asked for: the version and
-- amount are still checked against the order.

local K_ORDER, K_LOCKS, K_OPEN, K_CONFIG, K_REFS = KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local order_id, token, amount, version = ARGV[6], ARGV[7], tonumber(ARGV[8]), tonumber(ARGV[9])
local payment_ref = ARGV[10]

local o = redis.call('HMGET', K_ORDER, 'json', 'status', 'version', 'total', 'paid_ref', 'table_id', 'paid_cents')
if not o[1] then return fail('NOT_FOUND') end
local json, status, table_id = o[1], o[2], o[6]
-- Split bill (SPEC §10): after shares are paid a whole-order payment pays what remains due.
local due = tonumber(o[4]) - (tonumber(o[7]) or 0)
if status == 'paid' and o[5] == payment_ref then
  return reply({ok = 1, paid = true, replay = true}, json)
end

local held = reap(K_LOCKS, order_id)
local lock = held.pay

local function refuse(code, with_order)
  reject_payment(table_id, order_id, code, payment_ref, amount, version, lock)
  return fail(code, nil, with_order and json or nil)
end

if status ~= 'open' then return refuse('ORDER_CLOSED', true) end
local used_by = redis.call('HGET', K_REFS, payment_ref)
if used_by and used_by ~= order_id then return refuse('PAYMENT_REF_REUSED', false) end

if not store_config(K_CONFIG, ARGV[11]).strong_link_enabled then
  if version ~= tonumber(o[3]) then return refuse('STALE_VERSION', true) end
  if amount ~= due then return refuse('AMOUNT_MISMATCH', true) end
  redis.call('HSET', K_REFS, payment_ref, order_id)
  return reply({ok = 1, paid = true}, mark_paid(K_ORDER, K_LOCKS, K_OPEN, order_id, held, payment_ref, amount))
end

if not lock or lock.token ~= token or holder_id(lock.holder) ~= holder_id(ACTOR) then
  lock = nil
  return refuse('LOCK_LOST', false)
end
if lock.completing then return fail('PAYMENT_LOCKED') end
if version ~= tonumber(lock.version) or tonumber(o[3]) ~= tonumber(lock.version) then
  return refuse('STALE_VERSION', true)
end
if amount ~= due then return refuse('AMOUNT_MISMATCH', true) end

redis.call('HSET', K_REFS, payment_ref, order_id)
return reply({ok = 1, paid = true}, mark_paid(K_ORDER, K_LOCKS, K_OPEN, order_id, held, payment_ref, amount))
