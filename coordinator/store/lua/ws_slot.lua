-- ws_slot.lua: one websocket's place under a connection cap (realtime/admission.py). Standalone (no
-- lib.lua prelude): it touches one key only, so it runs on any node of a Redis Cluster.
--
-- KEYS[1] the cap's sorted set (tl:{s}:ws:h5:<session> | tl:{s}:ws:erp:<terminal> | tl:ws:addr:<ip>)
--         member = a connection id (random) -> the Redis ms at which the place lapses
-- ARGV[1] op: take | keep | give   ARGV[2] member   ARGV[3] sockets allowed   ARGV[4] lease in ms
--
-- Returns, by op:
-- take: drop lapsed places, then take one if fewer than ARGV[3] are held → 1, else 0 (nothing kept).
-- keep: extend a held place by the lease (the owning process does it every lease / 3) → 1.
-- give: drop the place → 1.
-- A process killed with its sockets open stops keeping their places: they lapse within one lease,
-- so its sockets stop counting without anyone cleaning up after it.

local key, op, member = KEYS[1], ARGV[1], ARGV[2]
local limit, lease = tonumber(ARGV[3]), tonumber(ARGV[4])
if op == 'give' then
  redis.call('ZREM', key, member)
  return 1
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if op == 'keep' then
  redis.call('ZADD', key, 'XX', now + lease, member)
  redis.call('PEXPIRE', key, lease)
  return 1
end
redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
if not redis.call('ZSCORE', key, member) and redis.call('ZCARD', key) >= limit then
  return 0
end
redis.call('ZADD', key, now + lease, member)
redis.call('PEXPIRE', key, lease)
return 1
