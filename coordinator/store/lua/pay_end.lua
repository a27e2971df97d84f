-- pay_end.lua: a provider trade ended without money (failed, closed, expired, cancelled).
--
-- KEYS[1..4] common (lib.lua)
-- KEYS[5] locks hash   KEYS[6] payment record hash   KEYS[7] task zset
-- ARGV[1..5] common   ARGV[6] out_trade_no   ARGV[7] state: "failed" | "closed"
-- ARGV[8] lock: "end" (end the in-flight lock of this trade, reason ARGV[9]) | "keep" (a force is
--         about to break it, or the caller releases it itself)
-- ARGV[9] reason of lock.released (payment_failed | released)
--
-- Returns: only a record still in_flight changes → {"ok":1,"ended":true,"lock_ended":bool};
-- otherwise (money captured meanwhile, or already ended) → {"ok":1,"ended":false,"state":<its state>}.
-- Emits lock.released (when the lock ends) then payment.failed {out_trade_no, status, reason}.

local K_LOCKS, K_PAY, K_TASKS = KEYS[5], KEYS[6], KEYS[7]
local trade_no, state, mode, reason = ARGV[6], ARGV[7], ARGV[8], ARGV[9]

local r = redis.call('HMGET', K_PAY, 'state', 'order_id', 'lock_token', 'table_id')
if r[1] ~= 'in_flight' then return reply({ok = 1, ended = false, state = r[1] or 'missing'}) end
local order_id, token, table_id = r[2], r[3], r[4]
redis.call('HSET', K_PAY, 'state', state, 'ended_at', NOW, 'end_reason', reason)
redis.call('ZREM', K_TASKS, 'poll:' .. trade_no)

local lock_ended = false
local held = reap(K_LOCKS, order_id)
local slot, lock = payment_lock_by_token(held, token)  -- whole-order (pay) or a share's (SPEC §10)
if mode == 'end' and lock and lock.token == token and lock.out_trade_no == trade_no and not lock.completing then
  end_lock(K_LOCKS, slot, lock, 'lock.released', {reason = reason})
  lock_ended = true
end
index_order(K_LOCKS, order_id)
emit('payment.failed', table_id, order_id, {out_trade_no = trade_no, status = state, reason = reason})
return reply({ok = 1, ended = true, lock_ended = lock_ended})
