-- share_claim.lua: claim a split-bill share of an order under its own payment lock (SPEC §10).
-- The pure twin is coordinator/core/shares.py claim_share; tests/test_lua_agrees_with_shares.py
-- runs both over generated cases. Keep the order of the checks the same in both.
--
-- KEYS[1..4] common (lib.lua)
-- KEYS[5] order hash tl:{s}:order:{o}  fields json, body, status, version, table_id, total,
--         fence, paid_cents, shares (JSON array of the paid shares)
-- KEYS[6] locks hash tl:{s}:locks:{o}  fields edit, pay, share:<fence> (one per share lock)
-- KEYS[7] config hash tl:{s}:config
-- ARGV[1..5] common; ARGV[5] is the actor, who becomes the holder
-- ARGV[6] order_id   ARGV[7] the share asked for, JSON: {"kind":"lines","line_ids":[...]} |
--         {"kind":"parts","parts":n,"part":k} | {"kind":"amount","amount_cents":n} | {"kind":"rest"}
-- ARGV[8] expected_version or ""   ARGV[9] new token   ARGV[10] store config JSON defaults
--
-- Returns {"ok":1,"lock":Lock+token (with share {kind,...,amount_cents}),"reused":bool,"due":ms}
--      or {"err":"NOT_FOUND"} | {"err":"ORDER_CLOSED","order"} | {"err":"STALE_VERSION","order"}
--      or {"err":"FORBIDDEN"} (legacy mode stores no lock, so it cannot keep shares apart)
--      or {"err":"ORDER_LOCKED"|"PAYMENT_LOCKED","force_allowed":false,"lock"}
--      or {"err":"VALIDATION_ERROR"|"SHARE_TAKEN"|"SHARE_EXCEEDS","detail"}
-- Emits, in cause order: lock.expired (reaped), lock.released{converted} (the asker's own order
-- lock), lock.acquired (the share lock). The fence is next_fence: shares are grants like any other.

local K_ORDER, K_LOCKS, K_CONFIG = KEYS[5], KEYS[6], KEYS[7]
local order_id, spec = ARGV[6], cjson.decode(ARGV[7])
local expected = tonumber(ARGV[8])
local me = holder_id(ACTOR)

local o = redis.call('HMGET', K_ORDER, 'json', 'status', 'version', 'table_id', 'total', 'body', 'shares')
if not o[1] then return fail('NOT_FOUND') end
if o[2] ~= 'open' then return fail('ORDER_CLOSED', nil, o[1]) end
local version, table_id, total = tonumber(o[3]), o[4], tonumber(o[5])

local config = store_config(K_CONFIG, ARGV[10])
if not config.strong_link_enabled then return fail('FORBIDDEN') end

local held = reap(K_LOCKS, order_id)
if held.edit and held.edit.kind == 'order' and holder_id(held.edit.holder) ~= me then
  return fail('ORDER_LOCKED', {force_allowed = false, lock = public(held.edit)})
end
if held.pay then return fail('PAYMENT_LOCKED', {force_allowed = false, lock = public(held.pay)}) end
if expected and version > expected then return fail('STALE_VERSION', nil, o[1]) end

-- The shares that count: every paid one, and every live share lock.
local counted = {}
for _, share in ipairs(o[7] and cjson.decode(o[7]) or {}) do table.insert(counted, share) end
for _, slot in ipairs(held_slots(held)) do
  local lock = held[slot]
  if lock.share then
    if holder_id(lock.holder) == me then
      return reply({ok = 1, lock = lock, reused = true, due = index_order(K_LOCKS, order_id)})
    end
    table.insert(counted, lock.share)
  end
end

local due = total
for _, share in ipairs(counted) do due = due - tonumber(share.amount_cents) end

local function refuse(code, detail) return fail(code, {detail = detail}) end

-- The share's amount, by its kind (shares.py _resolve).
local amount
local share = {kind = spec.kind}
if spec.kind == 'lines' then
  local body = cjson.decode(o[6])
  local lines = {}
  for _, item in ipairs(body.items) do lines[item.line_id] = item.qty * item.unit_price_cents end
  for _, adj in ipairs(body.adjustments or {}) do
    if type(adj.line_id) == 'string' and lines[adj.line_id] then
      lines[adj.line_id] = lines[adj.line_id] + adj.amount_cents
    end
  end
  local ids, seen = spec.line_ids or {}, {}
  if #ids == 0 then return refuse('VALIDATION_ERROR', 'unknown or repeated line_id') end
  for _, id in ipairs(ids) do
    if not lines[id] or seen[id] then return refuse('VALIDATION_ERROR', 'unknown or repeated line_id') end
    seen[id] = true
  end
  for _, other in ipairs(counted) do
    if other.kind == 'lines' then
      for _, id in ipairs(other.line_ids) do
        if seen[id] then return refuse('SHARE_TAKEN', 'line already claimed or paid') end
      end
    end
  end
  amount = 0
  for _, id in ipairs(ids) do amount = amount + lines[id] end
  share.line_ids = ids
elseif spec.kind == 'parts' then
  local n, k = tonumber(spec.parts), tonumber(spec.part)
  if not (n and k and n >= 2 and n <= 50 and k >= 1 and k <= n) then
    return refuse('VALIDATION_ERROR', 'part out of range')
  end
  for _, other in ipairs(counted) do
    if other.kind == 'parts' and (tonumber(other.parts) ~= n or tonumber(other.part) == k) then
      return refuse('SHARE_TAKEN', 'part already claimed or paid')
    end
  end
  local each = (total - total % n) / n
  amount = (k == n) and (total - each * (n - 1)) or each
  share.parts, share.part = n, k
elseif spec.kind == 'amount' then
  amount = tonumber(spec.amount_cents)
else
  if due < 1 then return refuse('SHARE_EXCEEDS', 'nothing remains due') end
  amount = due
end
if amount < 1 then return refuse('VALIDATION_ERROR', 'the share is empty') end
if amount > due then return refuse('SHARE_EXCEEDS', string.format('%d > %d due', amount, due)) end
share.amount_cents = amount

-- Granted. An ERP terminal's own order lock turns into this payment lock (SPEC §2 "submit, then pay"):
-- a payment lock never coexists with an order lock (invariant 2).
if held.edit and held.edit.kind == 'order' then
  end_lock(K_LOCKS, 'edit', held.edit, 'lock.released', {reason = 'converted'})
end
local seconds = lock_seconds(config, 'payment', ACTOR.role)
local lock = {kind = 'payment', order_id = order_id, table_id = table_id, holder = ACTOR,
              fence = next_fence(K_ORDER), version = expected or version, acquired_at = NOW,
              expires_at = NOW + seconds * 1000, token = ARGV[9], completing = false, share = share}
redis.call('HSET', K_LOCKS, 'share:' .. string.format('%d', lock.fence), encode(lock))
emit('lock.acquired', table_id, order_id, {lock = public(lock)})
return reply({ok = 1, lock = lock, reused = false, due = index_order(K_LOCKS, order_id)})
