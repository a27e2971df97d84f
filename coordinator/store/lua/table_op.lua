-- table_op.lua: move (换桌) or merge (并桌) orders atomically with their locks (SPEC §11).
-- core/table_ops.py decide_table_op is the pure twin of op "begin".
--
-- op "begin": decide, break what a force breaks, and hold an `order` lock on every order involved
-- (the asker's own order lock is kept) while the ERP applies the operation.
--   KEYS[1..4] common (lib.lua)   KEYS[5] config hash tl:{s}:config
--   KEYS[6+2i] order hash, KEYS[7+2i] locks hash of the i-th order (i from 0)
--   ARGV[1..5] common (ARGV[5] the ERP terminal)   ARGV[6] "begin"   ARGV[7] force "1"|"0"
--   ARGV[8] new token   ARGV[9] store config JSON defaults   ARGV[10] "move"|"merge"   ARGV[11..] order ids
--   Returns {"ok":1,"enforced":bool,"orders":[{order_id,table_id,version,token,fence,reused}],
--            "refunds":[{order_id,reason,paid_cents}]?,"due"}
--        or {"err":"NOT_FOUND"|"ORDER_CLOSED"|"FORBIDDEN","order_id"}
--        or {"err":PAYMENT_IN_FLIGHT|SHARE_PAID|ORDER_LOCKED|PRESETTLED|PAYMENT_LOCKED,"force_allowed","lock","order_id"}
--   Emits lock.expired (reaped), lock.forced {by} (forced), refund.needed {reason, paid_cents, lock},
--   lock.acquired (the operation's order locks).
--   Split bill: share locks (slots share:<fence>) are payment locks under the modify rules (a claimed
--   one is PAYMENT_LOCKED, forced like any); one with money in flight (phase in_flight/completing)
--   is PAYMENT_IN_FLIGHT with force_allowed false, whatever `force` says.
--
-- op "finish": after the ERP's orders are stored (put_order): the locks follow their order's
-- table, the operation's own locks end, the old tables learn where their party went.
--   KEYS[1..4] common   KEYS[5+3i] order hash, KEYS[6+3i] locks hash, KEYS[7+3i] follow hash of the
--   table the i-th order was at (tl:{s}:follow:{t})
--   ARGV[6] "finish"   ARGV[7] "move"|"merge"   ARGV[8] target order id (merge: the one kept)
--   ARGV[9+4i..12+4i] order_id, token of the operation's lock, "1" if the asker held it before, old table_id
--   Returns {"ok":1,"due":ms|-1}
--   Emits lock.released {released} (the operation's locks), then order.moved {from_table_id,
--   to_table_id, order} on the old table, or order.merged {into, from, into_table_id, order} on each
--   source order's table.

-- op "reopen" (反结账): store the ERP's reopened order (open again, a newer version) over a paid or
-- cancelled one, keeping what was paid in the order's `history` (the books keep it).
--   KEYS[1..4] common   KEYS[5] order hash   KEYS[6] open orders hash tl:{s}:open
--   ARGV[6] "reopen"   ARGV[7] order_id   ARGV[8] order JSON without status   ARGV[9] content hash
--   ARGV[10] version   ARGV[11] table_id   ARGV[12] total_cents
--   Returns {"ok":1,"changed":bool,"order"} | {"err":"NOT_FOUND"} | {"err":"STALE_VERSION","order"}
--   Emits order.reopened {previous: {version, status, paid_ref, total_cents}, history, order}.

local op = ARGV[6]

if op == 'reopen' then
  local K_ORDER, K_OPEN = KEYS[5], KEYS[6]
  local order_id, body, hash, version, table_id, total =
    ARGV[7], ARGV[8], ARGV[9], tonumber(ARGV[10]), ARGV[11], tonumber(ARGV[12])
  local cur = redis.call('HMGET', K_ORDER, 'json', 'status', 'version', 'paid_ref', 'total', 'history')
  if not cur[1] then return fail('NOT_FOUND') end
  if cur[2] == 'open' and tonumber(cur[3]) == version then return reply({ok = 1, changed = false}, cur[1]) end
  if tonumber(cur[3]) >= version or cur[2] == 'open' then return fail('STALE_VERSION', nil, cur[1]) end
  local previous = {version = tonumber(cur[3]), status = cur[2], paid_ref = cur[4] or cjson.null,
                    total_cents = tonumber(cur[5]), reopened_at = NOW}
  local history = cur[6] and cjson.decode(cur[6]) or {}
  table.insert(history, previous)
  local json = write_order(K_ORDER, body, 'open', {'version', version, 'hash', hash, 'table_id', table_id,
                                                     'total', total, 'history', encode(history)})
  redis.call('HDEL', K_ORDER, 'paid_ref')
  redis.call('HSET', K_OPEN, order_id, table_id .. '|' .. string.format('%d', NOW))
  emit('order.reopened', table_id, order_id,
       raw_field(encode({previous = previous, history = history}), 'order', json))
  return reply({ok = 1, changed = true}, json)
end

-- Split bill (SPEC §10): cents already paid on shares of the order (0 without split bill).
local function paid_cents(order_json) return tonumber(cjson.decode(order_json).paid_cents or 0) or 0 end

-- A payment lock with money on its way (docs/protocol.md C2 phases), and whether it is completing.
local function money(lock)
  local completing = lock.completing or lock.phase == 'completing'
  return completing or lock.phase == 'in_flight', completing
end

if op == 'begin' then
  local K_CONFIG = KEYS[5]
  local force, token, defaults, name = ARGV[7] == '1', ARGV[8], ARGV[9], ARGV[10]
  local me = holder_id(ACTOR)
  if ACTOR.role ~= 'erp' then return fail('FORBIDDEN') end
  local config = store_config(K_CONFIG, defaults)
  local orders, denials, forceable = {}, {}, true
  for i = 0, #ARGV - 11 do
    local order_id, K_ORDER, K_LOCKS = ARGV[11 + i], KEYS[6 + 2 * i], KEYS[7 + 2 * i]
    local o = redis.call('HMGET', K_ORDER, 'json', 'status', 'version', 'table_id')
    if not o[1] then return fail('NOT_FOUND', {order_id = order_id}) end
    if o[2] ~= 'open' then return fail('ORDER_CLOSED', {order_id = order_id}, o[1]) end
    local held = config.strong_link_enabled and reap(K_LOCKS, order_id) or {}
    local entry = {order_id = order_id, table_id = o[4], version = tonumber(o[3]), K_ORDER = K_ORDER,
                   K_LOCKS = K_LOCKS, held = held, paid = paid_cents(o[1]), conflicting = {}}
    local denial = nil
    local pay = held.pay
    -- Split bill (SPEC §10): a share's payment lock with money on its way is never forced; the
    -- first by fence is reported (held_slots orders shares by fence).
    local share_money = nil
    for _, slot in ipairs(held_slots(held)) do
      if not share_money and string.sub(slot, 1, 6) == 'share:' and money(held[slot]) then share_money = held[slot] end
    end
    if pay and money(pay) then
      local _, completing = money(pay)
      denial = {code = 'PAYMENT_IN_FLIGHT', force_allowed = not completing, lock = pay}
      entry.in_flight = pay
    elseif share_money then
      denial = {code = 'PAYMENT_IN_FLIGHT', force_allowed = false, lock = share_money}
    elseif entry.paid > 0 then
      denial = {code = 'SHARE_PAID', force_allowed = true}
    end
    -- Every lock meets the modify rules, share locks included (a claimed share is a payment lock).
    for _, k in ipairs(REPORT_ORDER) do
      for _, slot in ipairs(held_slots(held)) do
        local lock = held[slot]
        if lock and lock.kind == k then
          if k == 'order' and holder_id(lock.holder) == me then
            entry.mine = lock
          elseif CONFLICTS['modify'][k] then
            table.insert(entry.conflicting, {slot = slot, lock = lock})
          end
        end
      end
    end
    if not denial and #entry.conflicting > 0 then
      local first, completing = entry.conflicting[1].lock, false
      for _, c in ipairs(entry.conflicting) do if c.lock.completing then completing = true end end
      denial = {code = CONFLICTS['modify'][first.kind], force_allowed = not completing, lock = first}
    end
    if denial then
      denial.order_id = order_id
      table.insert(denials, denial)
      if not denial.force_allowed then forceable = false end
    end
    table.insert(orders, entry)
  end
  if #denials > 0 and not (force and forceable) then
    local d = denials[1]
    return fail(d.code, {force_allowed = forceable, lock = d.lock and public(d.lock) or nil, order_id = d.order_id})
  end
  local out, refunds, due = {}, {}, -1
  for _, e in ipairs(orders) do
    for _, c in ipairs(e.conflicting) do
      end_lock(e.K_LOCKS, c.slot, c.lock, 'lock.forced', {by = ACTOR, operation = name})
    end
    if e.in_flight then
      table.insert(refunds, {order_id = e.order_id, reason = 'payment_in_flight', paid_cents = 0})
      emit('refund.needed', e.table_id, e.order_id,
           {reason = 'payment_in_flight', paid_cents = 0, operation = name, lock = public(e.in_flight), by = ACTOR})
    end
    if e.paid > 0 then
      table.insert(refunds, {order_id = e.order_id, reason = 'share_paid', paid_cents = e.paid})
      emit('refund.needed', e.table_id, e.order_id,
           {reason = 'share_paid', paid_cents = e.paid, operation = name, by = ACTOR})
    end
    local lock = e.mine
    local reused = lock ~= nil
    if not lock then
      lock = {kind = 'order', order_id = e.order_id, table_id = e.table_id, holder = ACTOR,
              fence = next_fence(e.K_ORDER), version = e.version, acquired_at = NOW,
              expires_at = NOW + lock_seconds(config, 'order', 'erp') * 1000, token = token, completing = false}
      if config.strong_link_enabled then
        redis.call('HSET', e.K_LOCKS, 'edit', encode(lock))
        emit('lock.acquired', e.table_id, e.order_id, {lock = public(lock), operation = name})
      end
    end
    table.insert(out, {order_id = e.order_id, table_id = e.table_id, version = e.version, token = lock.token,
                       fence = lock.fence, reused = reused})
    local d = index_order(e.K_LOCKS, e.order_id)
    if d >= 0 and (due < 0 or d < due) then due = d end
  end
  return reply({ok = 1, enforced = config.strong_link_enabled, orders = out,
                refunds = refunds[1] and refunds or nil, due = due})
end

-- finish
local name, into = ARGV[7], ARGV[8]
local due = -1
local into_table, into_json = nil, nil
local entries = {}
for i = 0, (#ARGV - 8) / 4 - 1 do
  local e = {order_id = ARGV[9 + 4 * i], token = ARGV[10 + 4 * i], reused = ARGV[11 + 4 * i] == '1',
             from_table = ARGV[12 + 4 * i], K_ORDER = KEYS[5 + 3 * i], K_LOCKS = KEYS[6 + 3 * i],
             K_FOLLOW = KEYS[7 + 3 * i]}
  local o = redis.call('HMGET', e.K_ORDER, 'json', 'status', 'table_id')
  e.json, e.status, e.table_id = o[1], o[2], o[3]
  if e.order_id == into or name == 'move' then into_table, into_json = e.table_id, e.json end
  table.insert(entries, e)
end
for _, e in ipairs(entries) do
  local held = reap(e.K_LOCKS, e.order_id)
  for _, slot in ipairs(held_slots(held)) do  -- share locks (slots share:<fence>) follow too
    local lock = held[slot]
    if lock then
      if lock.token == e.token and not e.reused then
        end_lock(e.K_LOCKS, slot, lock, 'lock.released', {reason = 'released', operation = name})
      elseif lock.table_id ~= e.table_id then
        lock.table_id = e.table_id  -- locks follow their order to its new table
        redis.call('HSET', e.K_LOCKS, slot, encode(lock))
      end
    end
  end
  local d = index_order(e.K_LOCKS, e.order_id)
  if d >= 0 and (due < 0 or d < due) then due = d end
end
for _, e in ipairs(entries) do
  if name == 'move' and e.from_table ~= e.table_id then
    redis.call('HSET', e.K_FOLLOW, 'to', e.table_id, 'order_id', e.order_id, 'at', NOW)
    emit('order.moved', e.from_table, e.order_id,
         raw_field(encode({from_table_id = e.from_table, to_table_id = e.table_id}), 'order', e.json))
  elseif name == 'merge' and e.order_id ~= into then
    if e.from_table ~= into_table then
      redis.call('HSET', e.K_FOLLOW, 'to', into_table, 'order_id', into, 'at', NOW)
    end
    local from = {}
    for _, f in ipairs(entries) do if f.order_id ~= into then table.insert(from, f.order_id) end end
    emit('order.merged', e.from_table, e.order_id,
         raw_field(encode({into = into, from = from, into_table_id = into_table, from_table_id = e.from_table}),
                   'order', into_json))
  end
end
return reply({ok = 1, due = due})
