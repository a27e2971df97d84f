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
--          A share's payment (the record has `share`, SPEC §10) whose lock is gone or whose order is
--          closed — typically the ERP's copy closed the order (put_order ends every lock, reason
--          order_closed) after the ERP booked this very share — joins the order's paid shares from the record (share.paid; order.paid too when an
--          order still open reaches its total), so paid_cents keeps what the ERP booked (invariant
--          10, issue 13). A share that no longer fits (a cancelled order, above the total, a line or
--          part already paid) becomes a surplus (reason order_closed) as a refusal does.
-- refused: the ERP will not take this money (e.g. its order changed): the completing lock ends
--          (reason payment_failed), payment.rejected is recorded and the money becomes a surplus
--          with a refund task → {"ok":1,"state":"surplus"}.
-- A record not completing (already confirmed or refused) → {"ok":1,"state":<its state>} unchanged.

local K_ORDER, K_LOCKS, K_OPEN, K_PAY, K_TASKS, K_CONFIG = KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10]
local trade_no, outcome, code = ARGV[6], ARGV[7], ARGV[8]

local r = redis.call('HMGET', K_PAY, 'state', 'order_id', 'lock_token', 'payment_ref', 'received_cents',
                     'table_id', 'version', 'provider', 'transaction_id', 'share', 'fence')
redis.call('ZREM', K_TASKS, 'outbox:' .. trade_no)
if r[1] ~= 'completing' then return reply({ok = 1, state = r[1] or 'missing'}) end
local order_id, token, payment_ref, amount = r[2], r[3], r[4], tonumber(r[5])

local held = reap(K_LOCKS, order_id)
local slot, lock = payment_lock_by_token(held, token)  -- whole-order (pay) or a share's (SPEC §10)

-- The record's share joins the paid shares (its lock gone or its order closed, see above); false
-- when it does not fit.
local function join_recorded_share(status)
  local share = cjson.decode(r[10])
  local o = redis.call('HMGET', K_ORDER, 'total', 'paid_cents', 'shares')
  local shares = o[3] and cjson.decode(o[3]) or {}
  if status == 'cancelled' or (tonumber(o[2]) or 0) + tonumber(share.amount_cents) > tonumber(o[1]) then
    return false
  end
  local mine = {}
  for _, id in ipairs(share.line_ids or {}) do mine[id] = true end
  for _, s in ipairs(shares) do
    for _, id in ipairs(s.line_ids or {}) do if mine[id] then return false end end
    if share.kind == 'parts' and s.kind == 'parts' and (s.parts ~= share.parts or s.part == share.part) then
      return false
    end
  end
  if lock then  -- an order closed some other way than put_order, the lock left: it ends first
    end_lock(K_LOCKS, slot, lock, 'lock.released', {reason = 'paid'})
    held[slot] = nil
  end
  add_paid_share(K_ORDER, K_LOCKS, K_OPEN, order_id, held, share, tonumber(r[11]), payment_ref, status)
  return true
end

-- The money stays with us: a surplus with a refund task (invariant 9).
local function surplus(reason)
  if lock then end_lock(K_LOCKS, slot, lock, 'lock.released', {reason = 'payment_failed'}) end
  index_order(K_LOCKS, order_id)
  open_surplus(K_PAY, K_TASKS, store_config(K_CONFIG, ARGV[9]), trade_no, reason, amount, r[6], order_id,
               r[8], r[9])
  return reply({ok = 1, state = 'surplus'})
end

if outcome == 'paid' then
  local status = redis.call('HGET', K_ORDER, 'status')
  if status == 'open' and lock and lock.share then
    -- A share confirmed: it joins the paid shares; the order is paid when they reach the total.
    redis.call('HSET', K_PAY, 'state', 'paid', 'confirmed_at', NOW)
    local json = mark_share_paid(K_ORDER, K_LOCKS, K_OPEN, order_id, held, slot, payment_ref)
    index_order(K_LOCKS, order_id)
    return reply({ok = 1, state = 'paid'}, json)
  end
  if r[10] and redis.call('HEXISTS', K_ORDER, 'ref:' .. payment_ref) == 0 then
    if not join_recorded_share(status) then return surplus('order_closed') end
    redis.call('HSET', K_PAY, 'state', 'paid', 'confirmed_at', NOW)
    index_order(K_LOCKS, order_id)
    return reply({ok = 1, state = 'paid'})
  end
  redis.call('HSET', K_PAY, 'state', 'paid', 'confirmed_at', NOW)
  if status == 'open' then
    return reply({ok = 1, state = 'paid'}, mark_paid(K_ORDER, K_LOCKS, K_OPEN, order_id, held, payment_ref, amount))
  end
  if lock then end_lock(K_LOCKS, slot, lock, 'lock.released', {reason = 'paid'}) end
  index_order(K_LOCKS, order_id)
  return reply({ok = 1, state = 'paid'})
end

reject_payment(r[6], order_id, code, payment_ref, amount, tonumber(r[7]), lock)
return surplus('erp_refused:' .. code)
