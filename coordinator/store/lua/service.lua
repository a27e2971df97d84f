-- service.lua: a diner's service request (呼叫服务员, 加水, 请求结账) and a waiter taking it (SPEC §11).
--
-- KEYS[1..4] common (lib.lua)   KEYS[5] request   tl:{s}:svc:{id} (JSON string)
-- KEYS[6] index tl:{s}:svcs (zset id -> requested_at)   KEYS[7] cooldown tl:{s}:svccool:{table}:{kind}
-- ARGV[1..5] common (ARGV[5]: the diner for request, the waiter for take)   ARGV[6] op: request | take
-- request: ARGV[7] id   ARGV[8] table_id   ARGV[9] kind   ARGV[10] cooldown ms   ARGV[11] keep ms
-- take:    ARGV[7] id
--
-- Returns {"ok":1,"request":Request} | {"err":"RATE_LIMITED","retry_after_ms"} (cooldown of this table
-- and kind) | {"err":"NOT_FOUND"} | {"err":"ALREADY_TAKEN","request"} (with taken_by, taken_at).
-- Emits service.requested {request, by: diner} or service.taken {request, by: waiter}. The stored
-- request keeps taken_by; the events carry the waiter only as `by`, which the H5 view strips of ids.

local K_REQ, K_INDEX, K_COOL = KEYS[5], KEYS[6], KEYS[7]
local op, id = ARGV[6], ARGV[7]

local function shown(req)
  return {id = req.id, kind = req.kind, table_id = req.table_id, requested_at = req.requested_at,
          state = req.state, taken_at = req.taken_at}
end

if op == 'request' then
  local table_id, kind = ARGV[8], ARGV[9]
  local cooldown, keep = tonumber(ARGV[10]), tonumber(ARGV[11])
  local left = redis.call('PTTL', K_COOL)
  if left > 0 then return fail('RATE_LIMITED', {retry_after_ms = left}) end
  redis.call('SET', K_COOL, id, 'PX', cooldown)
  local req = {id = id, kind = kind, table_id = table_id, requested_at = NOW, state = 'open'}
  redis.call('SET', K_REQ, encode(req), 'PX', keep)
  redis.call('ZREMRANGEBYSCORE', K_INDEX, '-inf', NOW - keep)
  redis.call('ZADD', K_INDEX, NOW, id)
  emit('service.requested', table_id, nil, {request = req, by = ACTOR})
  return reply({ok = 1, request = req})
end

local raw = redis.call('GET', K_REQ)
if not raw then return fail('NOT_FOUND') end
local req = cjson.decode(raw)
if req.state == 'taken' then return fail('ALREADY_TAKEN', {request = req}) end
req.state, req.taken_at, req.taken_by = 'taken', NOW, ACTOR
redis.call('SET', K_REQ, encode(req), 'KEEPTTL')
emit('service.taken', req.table_id, nil, {request = shown(req), by = ACTOR})
return reply({ok = 1, request = req})
