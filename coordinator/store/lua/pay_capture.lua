-- pay_capture.lua: money arrived (a verified notification or a provider query said paid).
--
-- KEYS[1..4] common (lib.lua)
-- KEYS[5] order hash   KEYS[6] locks hash   KEYS[7] config hash   KEYS[8] payment record hash
-- KEYS[9] transaction key tl:{s}:paytx:<provider>:<transaction_id> (idempotency)
-- KEYS[10] task zset   KEYS[11] payment refs hash tl:{s}:payrefs (payment_ref -> order_id)
-- KEYS[12] payments index
-- ARGV[1..5] common   ARGV[6] out_trade_no   ARGV[7] provider   ARGV[8] transaction_id
-- ARGV[9] amount_cents received   ARGV[10] paid_at (ms, or "")   ARGV[11] source: notify|poll|force|cancel
-- ARGV[12] store config JSON defaults   ARGV[13] outbox lease (ms) the caller takes for its own first try
-- ARGV[14] order_id to record an unknown trade under ("" when unknown)
--
-- Returns one of these, as every provider transaction ends as exactly one of them (invariant 9):
--   completing: the lock is in flight for this trade, the order open at the bound version, the amount
--               the bound total → the lock is marked completing with no deadline the sweeper honours
--               (it stays until the ERP confirms), an outbox task "outbox:<no>" is queued (leased to
--               the caller) → {"ok":1,"outcome":"completing","payment":record,"lock"}
--   surplus:    anything else (lock forced/expired/ended, order paid or closed, amount or version
--               different) → recorded, payment.surplus emitted, a refund task queued when
--               auto_refund_surplus → {"ok":1,"outcome":"surplus","payment":record}
--   duplicate:  this transaction was captured before → {"ok":1,"outcome":"duplicate","payment":record}
-- An in-flight lock of this trade that cannot complete ends (lock.released reason payment_failed).

local K_ORDER, K_LOCKS, K_CONFIG, K_PAY, K_TX, K_TASKS, K_REFS, K_INDEX =
  KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10], KEYS[11], KEYS[12]
local trade_no, provider, tx, amount = ARGV[6], ARGV[7], ARGV[8], tonumber(ARGV[9])
local paid_at = tonumber(ARGV[10]) or NOW
local source, lease = ARGV[11], tonumber(ARGV[13])

local function record()
  local flat = redis.call('HGETALL', K_PAY)
  local r = {}
  for i = 1, #flat, 2 do r[flat[i]] = flat[i + 1] end
  return r
end

if redis.call('EXISTS', K_TX) == 1 then
  return reply({ok = 1, outcome = 'duplicate', payment = record()})
end
redis.call('SET', K_TX, trade_no)

local rec = record()
local known = rec.order_id ~= nil
local order_id = rec.order_id or (ARGV[14] ~= '' and ARGV[14] or nil)
local payment_ref = provider .. ':' .. tx
redis.call('HSET', K_PAY, 'out_trade_no', trade_no, 'provider', provider, 'transaction_id', tx,
           'received_cents', amount, 'paid_at', paid_at, 'captured_at', NOW, 'capture_source', source,
           'payment_ref', payment_ref)
if not known then
  redis.call('HSET', K_PAY, 'state', 'unknown', 'created_at', NOW, 'amount_cents', amount, 'store_id', STORE)
  redis.call('ZADD', K_INDEX, NOW, trade_no)
end
redis.call('ZREM', K_TASKS, 'poll:' .. trade_no)

local reason = nil
local slot, lock, o = nil, nil, nil
-- What this trade must bring: a share its amount, a whole-order payment what remains (SPEC §10).
local function due_of(l, order)
  if l and l.share then return tonumber(l.share.amount_cents) end
  return tonumber(order[4]) - (tonumber(order[6]) or 0)
end
if not known then
  reason = 'unknown_trade'
elseif rec.state ~= 'in_flight' then
  reason = 'payment_' .. rec.state          -- closed, failed: the trade was ended before the money came
else
  o = redis.call('HMGET', K_ORDER, 'json', 'status', 'version', 'total', 'paid_ref', 'paid_cents')
  local held = reap(K_LOCKS, order_id)
  slot, lock = payment_lock_by_token(held, rec.lock_token)  -- whole-order (pay) or a share's (SPEC §10)
  if not (lock and lock.out_trade_no == trade_no and lock.token == rec.lock_token) then
    lock = nil
    reason = 'lock_gone'
  end
  if not o[1] or o[2] ~= 'open' then
    reason = 'order_closed'
  elseif redis.call('HEXISTS', K_REFS, payment_ref) == 1 then
    reason = 'payment_ref_reused'
  elseif tonumber(o[3]) ~= tonumber(rec.version) then
    reason = reason or 'version_changed'
  elseif amount ~= tonumber(rec.amount_cents) or amount ~= due_of(lock, o) then
    reason = reason or 'amount_mismatch'
  end
end

if reason == nil then
  lock.completing = true
  lock.phase = 'completing'
  lock.payment_ref = payment_ref
  lock.amount_cents = amount
  -- The sweeper must never end a lock whose money has arrived: the deadline moves a year out and
  -- only pay_confirm.lua ends it (SPEC §9: it stays completing until the ERP confirms).
  lock.expires_at = NOW + 365 * 86400 * 1000
  redis.call('HSET', K_LOCKS, slot, encode(lock))
  redis.call('HSET', K_PAY, 'state', 'completing', 'erp_attempts', 0)
  redis.call('HSET', K_REFS, payment_ref, order_id)
  redis.call('ZADD', K_TASKS, NOW + lease, 'outbox:' .. trade_no)
  emit('lock.renewed', lock.table_id, order_id, {lock = public(lock), reason = 'completing'})
  index_order(K_LOCKS, order_id)
  return reply({ok = 1, outcome = 'completing', payment = record(), lock = lock})
end

-- Surplus. An in-flight lock of this trade that can no longer complete ends now.
if lock then
  end_lock(K_LOCKS, slot, lock, 'lock.released', {reason = 'payment_failed'})
  index_order(K_LOCKS, order_id)
end
open_surplus(K_PAY, K_TASKS, store_config(K_CONFIG, ARGV[12]), trade_no, reason, amount,
             rec.table_id or cjson.null, order_id, provider, tx)
return reply({ok = 1, outcome = 'surplus', payment = record()})
