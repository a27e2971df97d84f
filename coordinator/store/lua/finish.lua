-- finish.lua: end an H5 completion once the ERP has answered order.pay (or not).
--
-- KEYS[1..4] common (lib.lua)   KEYS[5] order hash   KEYS[6] locks hash   KEYS[7] open orders hash
-- KEYS[8] refused-requests hash tl:{s}:h5refused
-- ARGV[1..5] common   ARGV[6] order_id   ARGV[7] token   ARGV[8] outcome: "paid" | "rejected"
-- ARGV[9] code recorded when rejected (e.g. ERP_UNREACHABLE, or the ERP's own code)
-- ARGV[10] payment_ref   ARGV[11] amount_cents (used when the lock is already gone)
-- ARGV[12] H5 refusal window in ms   ARGV[13] H5 refusals written per table and window
--
-- Returns, by outcome:
-- paid:     the order is marked paid (its locks end, reason paid; then order.paid)
--           → {"ok":1,"paid":true,"order"}. If the order was closed meanwhile → {"err":"ORDER_CLOSED"}.
-- rejected: the completing lock is released and payment.rejected recorded (an H5 session's under the
--           audit bound of lib.lua bounded_refusal) → {"ok":1,"paid":false}.
-- The ERP has the last word on money: a confirmed payment is recorded even if the completing
-- lock's deadline passed (the caller's RPC bound keeps that from happening in practice).

local K_ORDER, K_LOCKS, K_OPEN = KEYS[5], KEYS[6], KEYS[7]
local order_id, token, outcome, code = ARGV[6], ARGV[7], ARGV[8], ARGV[9]

local o = redis.call('HMGET', K_ORDER, 'json', 'status', 'table_id')
if not o[1] then return fail('NOT_FOUND') end
local held = reap(K_LOCKS, order_id)
local lock = held.pay
if lock and lock.token ~= token then lock = nil end

if outcome == 'paid' then
  if o[2] ~= 'open' then return fail('ORDER_CLOSED', nil, o[1]) end
  local ref = lock and lock.payment_ref or ARGV[10]
  local amount = lock and lock.amount_cents or tonumber(ARGV[11])
  return reply({ok = 1, paid = true}, mark_paid(K_ORDER, K_LOCKS, K_OPEN, order_id, held, ref, amount))
end

local function write()
  if lock then
    reject_payment(o[3], order_id, code, lock.payment_ref, lock.amount_cents, lock.version, lock)
  else
    reject_payment(o[3], order_id, code, ARGV[10], tonumber(ARGV[11]), cjson.null, nil)
  end
end
if ACTOR.role == 'h5' then
  bounded_refusal(KEYS[8], tonumber(ARGV[12]), tonumber(ARGV[13]), o[3] or '', order_id, code, write)
else
  write()
end
if lock then end_lock(K_LOCKS, 'pay', lock, 'lock.released', {reason = 'released'}) end
index_order(K_LOCKS, order_id)
return reply({ok = 1, paid = false})
