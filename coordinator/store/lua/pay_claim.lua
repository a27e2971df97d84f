-- pay_claim.lua: lease the store's due payment tasks to one worker, so two processes never run one.
--
-- KEYS[1..4] common (lib.lua)   KEYS[5] task zset tl:{s}:paytasks (member "<kind>:<out_trade_no>")
-- ARGV[1..5] common   ARGV[6] at most this many   ARGV[7] lease (ms)
--
-- Returns {"ok":1,"tasks":[member...]}: each one due (score <= now) and re-scored to now + lease, so
-- a worker that dies mid-task leaves it to another after the lease. The worker re-scores (retry
-- later) or removes (done) it afterwards. Tasks are idempotent (order.pay on payment_ref, refunds on
-- out_refund_no, queries), so a lease that lapses under a slow worker costs a repeat, never money.

local K_TASKS = KEYS[5]
local due = redis.call('ZRANGEBYSCORE', K_TASKS, '-inf', NOW, 'LIMIT', 0, tonumber(ARGV[6]))
for _, member in ipairs(due) do
  redis.call('ZADD', K_TASKS, NOW + tonumber(ARGV[7]), member)
end
if #due == 0 then return '{"ok":1,"tasks":[]}' end
return encode({ok = 1, tasks = due})
