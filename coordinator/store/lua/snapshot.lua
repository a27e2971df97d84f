-- snapshot.lua: read a store as of one event seq, for a websocket snapshot (store/snapshot.py).
-- Read-only. Standalone (no lib.lua prelude).
--
-- KEYS[1] seq counter tl:{s}:seq   KEYS[2] open orders tl:{s}:open   KEYS[3] active zset tl:{s}:active
-- KEYS[4 .. 3+n] the order hashes of the n declared open orders (tl:{s}:order:<id>)
-- KEYS[4+n .. 3+n+m] the locks hashes of the m declared active orders (tl:{s}:locks:<id>)
-- ARGV[1] n   ARGV[2] m   ARGV[3 .. 2+n] the declared open order ids (in KEYS order)
-- ARGV[3+n .. 2+n+m] the declared active order ids (in KEYS order)
--
-- Returns {seq, now_ms, open, orders, locks}: open is the flat HGETALL of tl:{s}:open
-- (order_id, "table_id|opened_at", ...), orders the JSON of every open order, locks the JSON of
-- every stored lock (with its token: the caller strips it and drops those past expires_at).
-- No script runs between these reads, so the state is exactly the one after event `seq`.
-- Or {-1, open_ids, active_ids} when an open or active order is not among the declared ones
-- (one opened or locked after the caller listed them): nothing was read, and the caller asks
-- again declaring these. Declared orders that closed or lost their locks meanwhile are skipped.
--
-- Every key read is in KEYS (the rule of every script), so the caller lists the orders first.

local n, m = tonumber(ARGV[1]), tonumber(ARGV[2])
local order_key, locks_key = {}, {}
for i = 1, n do order_key[ARGV[2 + i]] = KEYS[3 + i] end
for i = 1, m do locks_key[ARGV[2 + n + i]] = KEYS[3 + n + i] end

local open_ids = redis.call('HKEYS', KEYS[2])
local active_ids = redis.call('ZRANGE', KEYS[3], 0, -1)
for _, id in ipairs(open_ids) do
  if not order_key[id] then return {-1, open_ids, active_ids} end
end
for _, id in ipairs(active_ids) do
  if not locks_key[id] then return {-1, open_ids, active_ids} end
end

local seq = tonumber(redis.call('GET', KEYS[1]) or '0')
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local open = redis.call('HGETALL', KEYS[2])
local orders = {}
for _, id in ipairs(open_ids) do
  local json = redis.call('HGET', order_key[id], 'json')
  if json then table.insert(orders, json) end
end
local locks = {}
for _, id in ipairs(active_ids) do
  for _, lock in ipairs(redis.call('HVALS', locks_key[id])) do
    table.insert(locks, lock)
  end
end
return {seq, now, open, orders, locks}
