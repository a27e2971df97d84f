-- put_order.lua: store the order the ERP pushes (PUT /stores/{s}/orders/{o}).
--
-- KEYS[1..4] common (lib.lua)   KEYS[5] order hash (body, json, status, updated_at, version, ...)
-- KEYS[6] locks hash
-- KEYS[7] open orders hash tl:{s}:open (order_id -> "table_id|opened_at")
-- ARGV[1..5] common   ARGV[6] order_id   ARGV[7] order JSON, compact, without status and updated_at
--         (write_order in lib.lua stores it as the hash's body and composes the order's json)
-- ARGV[8] content hash (table, items, total)   ARGV[9] version   ARGV[10] status   ARGV[11] table_id
-- ARGV[12] total_cents   ARGV[13] "erp" when the order is the ERP's own answer to an RPC (order.fetch,
--         order.pay), else ""   ARGV[14] force: "1" lets the ERP change a partly paid order anyway
--
-- Split bill (SPEC §10): once a share is paid (order field paid_cents > 0) a push that takes the
-- total below paid_cents, changes or drops a line a share paid for, or cancels the order is
-- {"err":"SHARE_PAID","order":Order} — unless forced, when it is stored and share.refund_due
-- {paid_cents, total_cents, refund_cents, lines} (ERP viewers) opens a refund task for a human
-- (reconciliation reason share_refund_due). Adding dishes only raises what remains due.
--
-- Returns {"ok":1,"changed":bool,"due":ms|-1,"order":Order}
--      or {"err":"STALE_VERSION","order":Order}: a lower version, or the same version with other
--         content. The same version with the same content is idempotent (changed=false, no event).
--         One exception: the ERP's own answer closing the same version and content is stored. After a
--         failover lost the coordinator's "paid" (SPEC §12), the ERP has the order paid at the version
--         the coordinator still holds open; its answer is the record (the ERP does not bump it).
--      or {"err":"ORDER_CLOSED","order":Order}: a paid or cancelled order pushed as open again.
-- A newer version is always stored: the ERP is the system of record. A payment lock bound to an
-- older version stays, but can no longer complete. Closing (paid | cancelled) ends every lock
-- (lock.released{order_closed}) before order.updated.

local K_ORDER, K_LOCKS, K_OPEN = KEYS[5], KEYS[6], KEYS[7]
local order_id, body, hash = ARGV[6], ARGV[7], ARGV[8]
local version, status, table_id, total = tonumber(ARGV[9]), ARGV[10], ARGV[11], ARGV[12]

local cur = redis.call('HMGET', K_ORDER, 'json', 'version', 'hash', 'status', 'paid_cents', 'shares', 'body')
if cur[1] then
  local cur_version = tonumber(cur[2])
  if version < cur_version then return fail('STALE_VERSION', nil, cur[1]) end
  if version == cur_version then
    if hash == cur[3] and status == cur[4] then
      return reply({ok = 1, changed = false, due = index_order(K_LOCKS, order_id)}, cur[1])
    end
    local erp_closes = ARGV[13] == 'erp' and hash == cur[3] and cur[4] == 'open' and status ~= 'open'
    if not erp_closes then return fail('STALE_VERSION', nil, cur[1]) end
  end
  -- A closed order stays closed: reopening a paid order would let it be locked and paid again
  -- (invariant 4). A late push of it as open is refused; a newer closed version is stored.
  if cur[4] ~= 'open' and status == 'open' then return fail('ORDER_CLOSED', nil, cur[1]) end
end

-- The amount and sku of each line of an order body (qty * unit price + its own adjustments).
local function lines_of(order_body)
  local decoded, out = cjson.decode(order_body), {}
  for _, item in ipairs(decoded.items) do
    out[item.line_id] = {sku = item.sku, cents = item.qty * item.unit_price_cents}
  end
  for _, adj in ipairs(decoded.adjustments or {}) do
    if type(adj.line_id) == 'string' and out[adj.line_id] then
      out[adj.line_id].cents = out[adj.line_id].cents + adj.amount_cents
    end
  end
  return out
end

local refund = nil
local paid = tonumber(cur[5]) or 0
if paid > 0 and status ~= 'paid' then
  local before, after, touched = lines_of(cur[7]), lines_of(body), {}
  for _, share in ipairs(cjson.decode(cur[6])) do
    for _, id in ipairs(share.line_ids or {}) do
      local was, now = before[id], after[id]
      if was and (not now or now.sku ~= was.sku or now.cents ~= was.cents) then table.insert(touched, id) end
    end
  end
  if status == 'cancelled' or tonumber(total) < paid or #touched > 0 then
    if ARGV[14] ~= '1' then return fail('SHARE_PAID', nil, cur[1]) end
    local keep = status == 'cancelled' and 0 or tonumber(total)
    refund = {paid_cents = paid, total_cents = tonumber(total), refund_cents = math.max(0, paid - keep),
              lines = touched[1] and touched or nil, status = status}
  end
end

local json = write_order(K_ORDER, body, status,
                         {'version', version, 'hash', hash, 'table_id', table_id, 'total', total})

local held = reap(K_LOCKS, order_id)
if status == 'open' then
  local opened = redis.call('HGET', K_OPEN, order_id)
  local opened_at = opened and string.match(opened, '|(%d+)$') or tostring(NOW)
  redis.call('HSET', K_OPEN, order_id, table_id .. '|' .. opened_at)
else
  redis.call('HDEL', K_OPEN, order_id)
  release_all(K_LOCKS, held, 'order_closed')
end
if refund then emit('share.refund_due', table_id, order_id, refund) end
emit('order.updated', table_id, order_id, raw_field('{}', 'order', json))
return reply({ok = 1, changed = true, due = index_order(K_LOCKS, order_id)}, json)
