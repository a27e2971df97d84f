-- put_order.lua: store the order the ERP pushes (PUT /stores/{s}/orders/{o}).
--
-- KEYS[1..4] common (lib.lua)   KEYS[5] order hash (body, json, status, updated_at, version, ...)
-- KEYS[6] locks hash
-- KEYS[7] open orders hash tl:{s}:open (order_id -> "table_id|opened_at")
-- ARGV[1..5] common   ARGV[6] order_id   ARGV[7] order JSON, compact, without status and updated_at
--         (write_order in lib.lua stores it as the hash's body and composes the order's json)
-- ARGV[8] content hash (table, items, total)   ARGV[9] version   ARGV[10] status   ARGV[11] table_id
-- ARGV[12] total_cents   ARGV[13] "erp" when the order is the ERP's own answer to an RPC (order.fetch,
--         order.pay), else ""
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

local cur = redis.call('HMGET', K_ORDER, 'json', 'version', 'hash', 'status')
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
emit('order.updated', table_id, order_id, raw_field('{}', 'order', json))
return reply({ok = 1, changed = true, due = index_order(K_LOCKS, order_id)}, json)
