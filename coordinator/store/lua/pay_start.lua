-- pay_start.lua: move a claimed H5 payment lock to phase in_flight and open its payment record.
--
-- KEYS[1..4] common (lib.lua)
-- KEYS[5] order hash      tl:{s}:order:{o}      KEYS[6] locks hash   tl:{s}:locks:{o}
-- KEYS[7] config hash     tl:{s}:config         KEYS[8] payment record hash tl:{s}:pay:{out_trade_no}
-- KEYS[9] payments index  tl:{s}:payments (out_trade_no -> created_at)
-- KEYS[10] task zset      tl:{s}:paytasks ("poll:<no>" -> due ms)
-- ARGV[1..5] common (ARGV[5] is the H5 session asking)
-- ARGV[6] order_id   ARGV[7] lock token   ARGV[8] out_trade_no   ARGV[9] provider
-- ARGV[10] store config JSON defaults   ARGV[11] lock margin beyond the provider expiry (ms)
-- ARGV[12] delay of the first provider query (ms)
--
-- Returns {"ok":1,"lock":Lock+token,"payment":{out_trade_no, amount_cents, expires_at, ...},"due"}
--      or {"ok":1,"existing":true,"lock"} when this lock is already in flight (a retry; the lock names
--         its out_trade_no)   or {"err":"TRADE_EXISTS"} (out_trade_no taken: draw another)
--      or {"err":"LOCK_LOST"} (no live claimed lock of this session with this token)
--      or {"err":"ORDER_CLOSED","order"} | {"err":"STALE_VERSION","order"} | {"err":"NOT_FOUND"}
--      or {"err":"PAYMENT_LOCKED"} while the lock is completing.
-- Emits lock.renewed {reason:"in_flight"} (the new expiry) then payment.started.
-- The in-flight expiry is fixed here (provider expiry + margin) and never renewed.

local K_ORDER, K_LOCKS, K_CONFIG, K_PAY, K_INDEX, K_TASKS = KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10]
local order_id, token, trade_no, provider = ARGV[6], ARGV[7], ARGV[8], ARGV[9]
local margin, first_poll = tonumber(ARGV[11]), tonumber(ARGV[12])

local o = redis.call('HMGET', K_ORDER, 'json', 'status', 'version', 'total', 'table_id', 'paid_cents')
if not o[1] then return fail('NOT_FOUND') end
local held = reap(K_LOCKS, order_id)
-- The lock may be a split-bill share's (slot share:<fence>, SPEC §10) or the whole order's (pay).
local slot, lock = payment_lock_by_token(held, token)
if not lock or lock.kind ~= 'payment' or lock.token ~= token or holder_id(lock.holder) ~= holder_id(ACTOR) then
  index_order(K_LOCKS, order_id)
  return fail('LOCK_LOST')
end
if lock.completing then return fail('PAYMENT_LOCKED') end
if lock.phase == 'in_flight' then
  -- A retry of a start that went through: the caller reads that record (its own key).
  return reply({ok = 1, existing = true, lock = lock})
end
if o[2] ~= 'open' then return fail('ORDER_CLOSED', nil, o[1]) end
if tonumber(o[3]) ~= tonumber(lock.version) then return fail('STALE_VERSION', nil, o[1]) end
if redis.call('EXISTS', K_PAY) == 1 then return fail('TRADE_EXISTS') end

local config = store_config(K_CONFIG, ARGV[10])
local provider_expires_at = NOW + config.h5_payment_window_seconds * 1000
-- A share pays its own amount; a whole-order payment what remains after paid shares (SPEC §10).
local amount = lock.share and tonumber(lock.share.amount_cents) or (tonumber(o[4]) - (tonumber(o[6]) or 0))

lock.phase = 'in_flight'
lock.out_trade_no = trade_no
lock.provider = provider
lock.expires_at = provider_expires_at + margin
redis.call('HSET', K_LOCKS, slot, encode(lock))

redis.call('HSET', K_PAY, 'out_trade_no', trade_no, 'provider', provider, 'store_id', STORE,
           'order_id', order_id, 'table_id', lock.table_id, 'version', lock.version, 'fence', lock.fence,
           'amount_cents', amount, 'state', 'in_flight', 'created_at', NOW,
           'provider_expires_at', provider_expires_at, 'lock_expires_at', lock.expires_at,
           'lock_token', token, 'holder', encode(lock.holder))
if lock.share then redis.call('HSET', K_PAY, 'share', encode(lock.share)) end
redis.call('ZADD', K_INDEX, NOW, trade_no)
redis.call('ZADD', K_TASKS, NOW + first_poll, 'poll:' .. trade_no)

emit('lock.renewed', lock.table_id, order_id, {lock = public(lock), reason = 'in_flight'})
emit('payment.started', lock.table_id, order_id,
     {out_trade_no = trade_no, provider = provider, amount_cents = amount, version = lock.version,
      expires_at = lock.expires_at, provider_expires_at = provider_expires_at})
return reply({ok = 1, lock = lock, due = index_order(K_LOCKS, order_id),
              payment = {out_trade_no = trade_no, provider = provider, amount_cents = amount,
                         provider_expires_at = provider_expires_at}})
