-- pay_confirm.lua: the ERP answered the outbox's order.pay for a captured provider payment.
--
-- KEYS[1..4] common (lib.lua)
-- KEYS[5] order hash   KEYS[6] locks hash   KEYS[7] open orders hash   KEYS[8] payment record hash
-- KEYS[9] task zset    KEYS[10] config hash
-- ARGV[1..5] common   ARGV[6] out_trade_no   ARGV[7] outcome: "paid" | "refused"
-- ARGV[8] the ERP's code when refused   ARGV[9] store config JSON defaults
--
-- Returns, by outcome:
-- paid:    the order is marked paid (its locks end, reason paid; then order.paid), the record paid,
--          the outbox task gone → {"ok":1,"state":"paid","order"}. An order the ERP's own push
--          closed meanwhile stays as it is (the ERP confirmed this payment: the record is paid).
-- refused: the ERP will not take this money (e.g. its order changed): the completing lock ends
--          (reason payment_failed), payment.rejected is recorded and the money becomes a surplus
--          with a refund task → {"ok":1,"state":"surplus"}.
-- A record not completing (already confirmed or refused) → {"ok":1,"state":<its state>} unchanged.

local K_ORDER, K_LOCKS, K_OPEN, K_PAY, K_TASKS, K_CONFIG = KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10]
local trade_no, outcome, code = ARGV[6], ARGV[7], ARGV[8]

local r = redis.call('HMGET', K_PAY, 'state', 'order_id', 'lock_token', 'payment_ref', 'received_cents',
                     'table_id', 'version', 'provider', 'transaction_id')
redis.call('ZREM', K_TASKS, 'outbox:' .. trade_no)
if r[1] ~= 'completing' then return reply({ok = 1, state = r[1] or 'missing'}) end
local order_id, token, payment_ref, amount = r[2], r[3], r[4], tonumber(r[5])

local held = reap(K_LOCKS, order_id)
local slot, lock = payment_lock_by_token(held, token)  -- whole-order (pay) or a share's (SPEC §10)

if outcome == 'paid' then
  redis.call('HSET', K_PAY, 'state', 'paid', 'confirmed_at', NOW)
  local status = redis.call('HGET', K_ORDER, 'status')
  if status == 'open' and lock and lock.share then
    -- A share confirmed: it joins the paid shares; the order is paid when they reach the total.
    local json = mark_share_paid(K_ORDER, K_LOCKS, K_OPEN, order_id, held, slot, payment_ref)
    index_order(K_LOCKS, order_id)
    return reply({ok = 1, state = 'paid'}, json)
  end
  if status == 'open' then
    return reply({ok = 1, state = 'paid'}, mark_paid(K_ORDER, K_LOCKS, K_OPEN, order_id, held, payment_ref, amount))
  end
  if lock then end_lock(K_LOCKS, slot, lock, 'lock.released', {reason = 'paid'}) end
  index_order(K_LOCKS, order_id)
  return reply({ok = 1, state = 'paid'})
end

reject_payment(r[6], order_id, code, payment_ref, amount, tonumber(r[7]), lock)
if lock then end_lock(K_LOCKS, slot, lock, 'lock.released', {reason = 'payment_failed'}) end
index_order(K_LOCKS, order_id)
local config = store_config(K_CONFIG, ARGV[9])
local refund_state = config.auto_refund_surplus and 'pending' or 'manual'
local refund_no = 'R' .. trade_no
redis.call('HSET', K_PAY, 'state', 'surplus', 'surplus_reason', 'erp_refused:' .. code, 'refund_no', refund_no,
           'refund_state', refund_state, 'refund_cents', amount)
if config.auto_refund_surplus then redis.call('ZADD', K_TASKS, NOW, 'refund:' .. trade_no) end
emit('payment.surplus', r[6], order_id,
     {out_trade_no = trade_no, provider = r[8], transaction_id = r[9], amount_cents = amount,
      reason = 'erp_refused:' .. code, refund_no = refund_no, refund_state = refund_state})
return reply({ok = 1, state = 'surplus'})
