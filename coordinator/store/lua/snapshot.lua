-- snapshot.lua: read a store as of one event seq, for a websocket snapshot (events.py). Read-only.
--
-- KEYS[1] seq counter tl:{s}:seq   KEYS[2] open orders tl:{s}:open   KEYS[3] active zset tl:{s}:active
-- ARGV[1] prefix of the order hashes "tl:{s}:order:"   ARGV[2] prefix of the locks hashes "tl:{s}:locks:"
--
-- Returns {seq, now_ms, open, orders, locks}: open is the flat HGETALL of tl:{s}:open
-- (order_id, "table_id|opened_at", ...), orders the JSON of every open order, locks the JSON of
-- every stored lock (with its token: the caller strips it and drops those past expires_at).
-- No script runs between these reads, so the state is exactly the one after event `seq`.
-- The per-order keys carry the store's hash tag, so they live in KEYS[1]'s cluster slot.

local seq = tonumber(redis.call('GET', KEYS[1]) or '0')
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local open = redis.call('HGETALL', KEYS[2])
local orders = {}
for i = 1, #open, 2 do
  local json = redis.call('HGET', ARGV[1] .. open[i], 'json')
  if json then table.insert(orders, json) end
end
local locks = {}
for _, order_id in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do
  for _, lock in ipairs(redis.call('HVALS', ARGV[2] .. order_id)) do
    table.insert(locks, lock)
  end
end
return {seq, now, open, orders, locks}
