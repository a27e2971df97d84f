-- complete.lua: accept a payment completion against the held payment lock (SPEC §2).
--
-- KEYS[1..4] common (lib.lua)   KEYS[5] order hash   KEYS[6] locks hash   KEYS[7] open orders hash
-- KEYS[8] config hash   KEYS[9] payment refs hash tl:{s}:payrefs (payment_ref -> order_id)
-- KEYS[10] refused-requests hash tl:{s}:h5refused
-- ARGV[1..5] common   ARGV[6] order_id   ARGV[7] token   ARGV[8] amount_cents   ARGV[9] version
-- ARGV[10] payment_ref   ARGV[11] mode: "self" | "begin"   ARGV[12] completing window in ms
-- ARGV[13] store config JSON defaults
-- ARGV[14] H5 refusal window in ms   ARGV[15] H5 refusals written per table and window
-- The amount must be what remains due: the total less the paid shares' paid_cents (SPEC §10).
--
-- Returns, by mode:
-- mode self  (an ERP terminal completing its own payment: it is the ERP) checks and marks the
--            order paid in this one step → {"ok":1,"paid":true,"order"}.
-- mode begin (an H5 payment: the ERP must confirm over RPC) checks and marks the lock
--            completing, so it can neither be forced nor expire before now + window
--            → {"ok":1,"paid":false,"lock"}; finish.lua ends it.
-- Idempotent on payment_ref: a replay after the order is paid with that ref → {"ok":1,"paid":true,
-- "replay":true,"order"}. Refusals emit payment.rejected (an H5 session's under the audit bound of
-- lib.lua bounded_refusal: later ones only counted) and return {"err":CODE[,"order"]}:
-- NOT_FOUND, ORDER_CLOSED, LOCK_LOST (stale, expired, forced-away or foreign token),
-- STALE_VERSION, AMOUNT_MISMATCH, PAYMENT_REF_REUSED (the ref paid another order of the store,
-- SPEC §9); PAYMENT_LOCKED (not recorded) while a completion is in flight.
-- The token must be the caller's own: a live lock's token presented by another client is foreign.
-- Legacy mode (strong_link_enabled false) stores no lock, so none is asked for: the version and
-- amount are still checked against the order; begin → {"ok":1,"paid":false,"enforced":false}.

local K_ORDER, K_LOCKS, K_OPEN, K_CONFIG, K_REFS = KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local order_id, token, amount, version = ARGV[6], ARGV[7], tonumber(ARGV[8]), tonumber(ARGV[9])
local payment_ref, mode, window = ARGV[10], ARGV[11], tonumber(ARGV[12])

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
  local function write() reject_payment(table_id, order_id, code, payment_ref, amount, version, lock) end
  if ACTOR.role == 'h5' then
    bounded_refusal(KEYS[10], tonumber(ARGV[14]), tonumber(ARGV[15]), table_id or '', order_id, code, write)
  else
    write()
  end
  return fail(code, nil, with_order and json or nil)
end

if status ~= 'open' then return refuse('ORDER_CLOSED', true) end
local used_by = redis.call('HGET', K_REFS, payment_ref)
if used_by and used_by ~= order_id then return refuse('PAYMENT_REF_REUSED', false) end

if not store_config(K_CONFIG, ARGV[13]).strong_link_enabled then
  if version ~= tonumber(o[3]) then return refuse('STALE_VERSION', true) end
  if amount ~= due then return refuse('AMOUNT_MISMATCH', true) end
  if mode == 'self' then
    redis.call('HSET', K_REFS, payment_ref, order_id)
    return reply({ok = 1, paid = true}, mark_paid(K_ORDER, K_LOCKS, K_OPEN, order_id, held, payment_ref, amount))
  end
  return reply({ok = 1, paid = false, enforced = false})
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

if mode == 'self' then
  redis.call('HSET', K_REFS, payment_ref, order_id)
  return reply({ok = 1, paid = true}, mark_paid(K_ORDER, K_LOCKS, K_OPEN, order_id, held, payment_ref, amount))
end

lock.completing = true
lock.payment_ref = payment_ref
lock.amount_cents = amount
if tonumber(lock.expires_at) < NOW + window then lock.expires_at = NOW + window end
redis.call('HSET', K_LOCKS, 'pay', encode(lock))
emit('lock.renewed', lock.table_id, order_id, {lock = public(lock), reason = 'completing'})
index_order(K_LOCKS, order_id)
return reply({ok = 1, paid = false, lock = lock})
