-- lib.lua: shared prelude of every tablelock script (scripts.py prepends it, then the rules
-- table generated from coordinator/rules.py, then the script body).
--
-- Every script receives the same first keys and arguments:
--   KEYS[1] seq counter  tl:{s}:seq        KEYS[2] event stream  tl:{s}:events
--   KEYS[3] audit stream tl:{s}:audit      KEYS[4] active zset   tl:{s}:active (order -> next expiry)
--   ARGV[1] store_id     ARGV[2] the store's pub/sub channel for live events (tl:{s}:live)
--   ARGV[3] event stream MAXLEN (approximate)   ARGV[4] audit stream MAXLEN (approximate)
--   ARGV[5] actor JSON ({"role":"erp","terminal_id","name"} | {"role":"h5","session_id"} | {"role":"system"})
-- Script-specific keys start at KEYS[5], arguments at ARGV[6].
-- The LAST key is the store's presence zset tl:{s}:presence (engine.run appends it): emit writes
-- each ERP holder's `online` into the event from it, so an event is final when stored and a
-- replay sends what went out live (issue 17). Without it (a script called bare) events carry no
-- `online` and viewers fill it in, as before. N_KEYS counts the keys before it.
-- Replies are one JSON string: {"ok":...} or {"err":CODE, ...}.
--
-- Time is the Redis server clock (TIME), so every coordinator process agrees on expiry.

local STORE = ARGV[1]
local CHANNEL = ARGV[2]
local EV_MAXLEN = ARGV[3]
local AUDIT_MAXLEN = ARGV[4]
local ACTOR = cjson.decode(ARGV[5])
local K_SEQ, K_EVENTS, K_AUDIT, K_ACTIVE = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local K_PRESENCE = (#KEYS > 4 and string.match(KEYS[#KEYS], ':presence$')) and KEYS[#KEYS] or nil
local N_KEYS = K_PRESENCE and #KEYS - 1 or #KEYS
-- A presence entry older than this no longer counts (realtime/liveness.py STALE_MS).
local PRESENCE_STALE_MS = 30000

local t = redis.call('TIME')
local NOW = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

-- Redis' cjson writes numbers with 14 significant digits (a version of 2^53 would come back as
-- 9.007199254741e+15), so every table a script stores or replies goes through encode, which
-- writes integral numbers exactly; strings, booleans and cjson.null are left to cjson.
-- A table with a [1] is an array; an empty table is written {} (leave empty arrays out).
local function encode(value)
  local t = type(value)
  if t == 'number' then
    if value == math.floor(value) and math.abs(value) < 2^63 then return string.format('%d', value) end
    return string.format('%.17g', value)
  elseif t ~= 'table' then
    return cjson.encode(value)
  end
  local parts = {}
  if value[1] ~= nil then
    for i = 1, #value do parts[i] = encode(value[i]) end
    return '[' .. table.concat(parts, ',') .. ']'
  end
  for k, v in pairs(value) do table.insert(parts, cjson.encode(tostring(k)) .. ':' .. encode(v)) end
  return '{' .. table.concat(parts, ',') .. '}'
end

local function holder_id(h)
  return h.role .. ':' .. tostring(h.terminal_id or h.session_id or '')
end

-- A lock as everyone but its holder sees it: no token.
local function public(lock)
  local copy = {}
  for k, v in pairs(lock) do
    if k ~= 'token' then copy[k] = v end
  end
  return copy
end

-- Orders travel as JSON text built by Python and are never re-encoded here: Redis' cjson would
-- write an empty items array as {}, a version above 10^14 in float notation, and reorder keys.
-- raw_field appends a member (key + JSON text) to a JSON object text; the key must not be in it.
local function raw_field(json, key, raw)
  if not raw then return json end
  if json == '{}' then return '{"' .. key .. '":' .. raw .. '}' end
  return string.sub(json, 1, -2) .. ',"' .. key .. '":' .. raw .. '}'
end

-- The order hash keeps the ERP's body (Python's compact JSON, without status and updated_at)
-- and the fields the scripts change (status, updated_at) apart; its `json` field, which readers
-- take, is always composed from them here: a status change is a field write, never a text edit.
-- extra: more field/value pairs to write with them. Returns the composed JSON.
local function write_order(order_key, body, status, extra)
  local updated_at = string.format('%d', NOW)
  local json = raw_field(raw_field(body, 'status', encode(status)), 'updated_at', updated_at)
  -- Split bill (SPEC §10): once a share is paid the order shows paid_cents and its paid shares
  -- (kept in their own fields, written by share_pay.lua, passed in extra or already stored).
  local split = redis.call('HMGET', order_key, 'paid_cents', 'shares')
  for i = 1, #(extra or {}), 2 do
    if extra[i] == 'paid_cents' then split[1] = extra[i + 1] elseif extra[i] == 'shares' then split[2] = extra[i + 1] end
  end
  if split[1] and tonumber(split[1]) > 0 then
    json = raw_field(raw_field(json, 'paid_cents', string.format('%d', tonumber(split[1]))), 'shares', split[2])
  end
  local args = {'HSET', order_key, 'body', body, 'json', json, 'status', status, 'updated_at', updated_at}
  for _, v in ipairs(extra or {}) do table.insert(args, v) end
  redis.call(unpack(args))
  return json
end

-- The store's configuration: the stored values (one JSON value per field) over the defaults.
local function store_config(config_key, defaults_json)
  local config = cjson.decode(defaults_json)
  local stored = redis.call('HGETALL', config_key)
  for i = 1, #stored, 2 do config[stored[i]] = cjson.decode(stored[i + 1]) end
  return config
end

-- Seconds a new or renewed lock of `kind` lasts for a holder of `role`.
local function lock_seconds(config, kind, role)
  if kind == 'payment' then
    return (role == 'h5') and config.h5_payment_lock_seconds or config.erp_payment_lock_seconds
  elseif kind == 'order' then
    return config.order_lock_seconds
  end
  return config.presettle_lock_seconds
end

-- The store's earliest lock expiry before this script touched tl:{s}:active (false: not read yet).
local ACTIVE_BEFORE = false

local function active_first()
  local first = redis.call('ZRANGE', K_ACTIVE, 0, 0, 'WITHSCORES')
  return first[2] and tonumber(first[2]) or nil
end

-- wake: the store's earliest expiry moved earlier (or appeared), so the global index tl:due
-- must learn it (engine.run, sweeper.py); otherwise its entry is already early enough.
local function with_wake(tbl)
  if ACTIVE_BEFORE ~= false then
    local after = active_first()
    if after and (ACTIVE_BEFORE == nil or after < ACTIVE_BEFORE) then tbl.wake = after end
  end
  return tbl
end

local function reply(tbl, order_json)
  return raw_field(encode(with_wake(tbl)), 'order', order_json)
end

local function fail(code, extra, order_json)
  local r = extra or {}
  r.err = code
  return raw_field(encode(with_wake(r)), 'order', order_json)
end

-- Terminals of the store with a live presence entry now (read once per script run).
local ONLINE = nil
local function online_terminals()
  if ONLINE then return ONLINE end
  ONLINE = {}
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', K_PRESENCE, NOW - PRESENCE_STALE_MS, '+inf')) do
    ONLINE[string.match(member, '^(.*)|[^|]*$') or member] = true
  end
  return ONLINE
end

-- An ERP holder as staff see it in an event: with `online` as of now (others unchanged).
local function holder_now(h)
  if not K_PRESENCE or type(h) ~= 'table' or h.role ~= 'erp' then return h end
  local copy = {}
  for k, v in pairs(h) do copy[k] = v end
  copy.online = online_terminals()[h.terminal_id] == true
  return copy
end

-- Append an event to the store's stream (for resume), to the audit log, and publish it live.
-- seq strictly increases per store; the stream id is 0-<seq> so resume is XRANGE (0-since.
-- data is a table, or JSON text when it carries an order.
local function emit(name, table_id, order_id, data)
  local seq = redis.call('INCR', K_SEQ)
  if type(data) == 'table' then
    if type(data.lock) == 'table' and data.lock.holder then
      local lock = {}
      for k, v in pairs(data.lock) do lock[k] = v end
      lock.holder = holder_now(lock.holder)
      data.lock = lock
    end
    if data.by then data.by = holder_now(data.by) end
    data = encode(data)
  end
  local ev = raw_field(encode({type = 'event', seq = seq, ts = NOW, name = name, store_id = STORE,
                                     table_id = table_id or cjson.null,
                                     order_id = order_id or cjson.null}), 'data', data)
  redis.call('XADD', K_EVENTS, 'MAXLEN', '~', EV_MAXLEN, '0-' .. seq, 'e', ev)
  redis.call('XADD', K_AUDIT, 'MAXLEN', '~', AUDIT_MAXLEN, '*', 'e', ev, 'actor', ARGV[5])
  redis.call('PUBLISH', CHANNEL, ev)
  return seq
end

local function load_slot(locks_key, slot)
  local raw = redis.call('HGET', locks_key, slot)
  if not raw then return nil end
  return cjson.decode(raw)
end

local function live(lock)
  return NOW < tonumber(lock.expires_at)
end

-- Drop locks past expires_at, emitting lock.expired once for each: whichever script meets an
-- expired lock first ends it, so the sweeper and a later acquire never both announce it.
-- The fields of an order's locks hash, in cause order: the edit slot, the whole-order payment
-- slot, then one "share:<fence>" field per split-bill share lock (SPEC §10), oldest first.
local function lock_slots(locks_key)
  local slots = {'edit', 'pay'}
  local shares = {}
  for _, field in ipairs(redis.call('HKEYS', locks_key)) do
    local fence = string.match(field, '^share:(%d+)$')
    if fence then table.insert(shares, {tonumber(fence), field}) end
  end
  table.sort(shares, function(a, b) return a[1] < b[1] end)
  for _, s in ipairs(shares) do table.insert(slots, s[2]) end
  return slots
end

-- The slots of a reaped `held` table in the order lock_slots gives.
local function held_slots(held)
  local slots = {}
  for _, slot in ipairs({'edit', 'pay'}) do
    if held[slot] then table.insert(slots, slot) end
  end
  local shares = {}
  for slot, lock in pairs(held) do
    if string.sub(slot, 1, 6) == 'share:' then table.insert(shares, {tonumber(lock.fence), slot}) end
  end
  table.sort(shares, function(a, b) return a[1] < b[1] end)
  for _, s in ipairs(shares) do table.insert(slots, s[2]) end
  return slots
end

local function reap(locks_key, order_id)
  local held = {}
  for _, slot in ipairs(lock_slots(locks_key)) do
    local lock = load_slot(locks_key, slot)
    if lock then
      if live(lock) then
        held[slot] = lock
      else
        redis.call('HDEL', locks_key, slot)
        emit('lock.expired', lock.table_id, order_id, {lock = public(lock)})
      end
    end
  end
  return held
end

-- End a lock with an event: lock.released {reason} or lock.forced {by}.
local function end_lock(locks_key, slot, lock, name, extra)
  redis.call('HDEL', locks_key, slot)
  local data = extra or {}
  data.lock = public(lock)
  emit(name, lock.table_id, lock.order_id, data)
end

-- Keep tl:{s}:active in step with the order's locks: score = the earliest expiry, or gone.
-- Returns that expiry (or -1) so the caller can wake the sweeper's global index.
local function index_order(locks_key, order_id)
  if ACTIVE_BEFORE == false then ACTIVE_BEFORE = active_first() end
  local due = -1
  for _, slot in ipairs(lock_slots(locks_key)) do
    local lock = load_slot(locks_key, slot)
    if lock then
      local e = tonumber(lock.expires_at)
      if due < 0 or e < due then due = e end
    end
  end
  if due < 0 then
    redis.call('ZREM', K_ACTIVE, order_id)
  else
    redis.call('ZADD', K_ACTIVE, due, order_id)
  end
  return due
end

-- End every lock of a closing order (reason paid | order_closed), in slot order.
local function release_all(locks_key, held, reason)
  for _, slot in ipairs(held_slots(held)) do
    end_lock(locks_key, slot, held[slot], 'lock.released', {reason = reason})
  end
end

-- Mark the order paid: its locks end first (reason paid), then order.paid, in cause order.
local function mark_paid(order_key, locks_key, open_key, order_id, held, payment_ref, amount)
  release_all(locks_key, held, 'paid')
  local j = write_order(order_key, redis.call('HGET', order_key, 'body'), 'paid', {'paid_ref', payment_ref})
  redis.call('HDEL', open_key, order_id)
  local table_id = redis.call('HGET', order_key, 'table_id')
  emit('order.paid', table_id, order_id,
       raw_field(encode({payment_ref = payment_ref, amount_cents = amount}), 'order', j))
  index_order(locks_key, order_id)
  return j
end

-- A provider's money no order takes becomes a surplus with its refund number R<out_trade_no>, a
-- refund task when the store refunds automatically (else a manual one for reconciliation), and
-- payment.surplus (invariant 9: a captured payment is paid or refunded, never lost).
local function open_surplus(pay_key, tasks_key, config, trade_no, reason, amount, table_id, order_id, provider, tx)
  local refund_state = config.auto_refund_surplus and 'pending' or 'manual'
  local refund_no = 'R' .. trade_no
  redis.call('HSET', pay_key, 'state', 'surplus', 'surplus_reason', reason, 'refund_no', refund_no,
             'refund_state', refund_state, 'refund_cents', amount)
  if config.auto_refund_surplus then redis.call('ZADD', tasks_key, NOW, 'refund:' .. trade_no) end
  emit('payment.surplus', table_id, order_id,
       {out_trade_no = trade_no, provider = provider, transaction_id = tx, amount_cents = amount,
        reason = reason, refund_no = refund_no, refund_state = refund_state})
end

-- Record a refused payment completion for reconciliation (payment.rejected, ERP viewers only).
local function reject_payment(table_id, order_id, code, payment_ref, amount, version, lock)
  emit('payment.rejected', table_id, order_id,
       {code = code, payment_ref = payment_ref, amount_cents = amount, version = version,
        lock = lock and public(lock) or cjson.null})
end

-- The next fence of an order: a hybrid logical clock on the Redis server clock, in milliseconds.
-- max(last + 1, NOW) strictly increases on one server, as HINCRBY did; because it also tracks the
-- clock, it stays above every fence issued before a failover even when the writes that issued
-- them were lost with the old primary (docs/architecture.md, "Failover and fences").
-- Milliseconds, not microseconds: Redis's cjson writes numbers with 14 significant digits, which
-- is exact for a millisecond clock (13 digits) until the year 5138 and would round microseconds.
local function next_fence(order_key)
  local fence = math.max((tonumber(redis.call('HGET', order_key, 'fence')) or 0) + 1, NOW)
  redis.call('HSET', order_key, 'fence', fence)
  return fence
end

-- Refused H5 requests, bounded in the audit log (issue 15 finding 3; store/audit.py reads the result).
-- A diner can send refused requests as fast as the rate limit lets it, from as many sessions as it
-- can open; each used to write an event and an audit entry, pushing real history out of the capped
-- streams. Per table and window (window_ms from the table's first refusal), the first refusal of a
-- kind (code) per session is written as before, at most `cap` per table; later ones are counted in
-- the store's hash tl:{s}:h5refused (field table_id -> JSON {since, written, seen, orders}) and
-- written as one audit-only entry `h5.refused_counted` {count, codes, from_ms, to_ms} per order:
-- before the table's next written refusal, when its window rolls, or when the admin reads the log
-- (flush_refusals.lua). ERP terminals' refusals never come here: staff actions are audited one by one.
local COUNTER_ACTOR = '{"role":"system","source":"h5_refusal_counter"}'

local function write_counted(table_id, st)
  for order_id, codes in pairs(st.orders) do
    local count = 0
    for _, n in pairs(codes) do count = count + n end
    local entry = raw_field(encode({type = 'audit', seq = 0, ts = NOW, name = 'h5.refused_counted',
                                    store_id = STORE, table_id = table_id, order_id = order_id}),
                            'data', encode({count = count, codes = codes, from_ms = st.since, to_ms = NOW}))
    redis.call('XADD', K_AUDIT, 'MAXLEN', '~', AUDIT_MAXLEN, '*', 'e', entry, 'actor', COUNTER_ACTOR)
  end
  st.orders = {}
end

-- Record one refused H5 request of ACTOR under the bound: write() (its event) runs when it is to be
-- written; returns true then, false when it was only counted.
local function bounded_refusal(k_refused, window_ms, cap, table_id, order_id, code, write)
  local raw = redis.call('HGET', k_refused, table_id)
  local st = raw and cjson.decode(raw) or nil
  if st and NOW >= st.since + window_ms then
    write_counted(table_id, st)
    st = nil
  end
  st = st or {since = NOW, written = 0, seen = {}, orders = {}}
  local who = tostring(ACTOR.session_id) .. '|' .. code
  local written = not st.seen[who] and st.written < cap
  if written then
    write_counted(table_id, st)  -- the counted ones first: the log stays in time order
    st.seen[who] = 1
    st.written = st.written + 1
  else
    local per = st.orders[order_id] or {}
    per[code] = (per[code] or 0) + 1
    st.orders[order_id] = per
  end
  redis.call('HSET', k_refused, table_id, encode(st))
  if written then write() end
  return written
end

-- Split bill (SPEC §10): the payment lock a token holds, whole-order (slot pay) or a share's
-- (slot share:<fence>); returns slot, lock or nil.
local function payment_lock_by_token(held, token)
  for _, slot in ipairs(held_slots(held)) do
    local lock = held[slot]
    if slot ~= 'edit' and lock.token == token then return slot, lock end
  end
  return nil, nil
end

-- A paid share (with the fence of the lock that held it) joins the order's `shares` (without its
-- holder: the table's diners see only that someone paid it), paid_cents grows, share.paid
-- {share, paid_cents, remaining_cents, order}; payment_ref is remembered (order field
-- ref:<payment_ref>) for idempotency. The order keeps `status`; an open order whose paid_cents
-- reaches the total is paid (mark_paid: the other locks end, then order.paid). Returns the order
-- JSON and whether it is paid.
local function add_paid_share(order_key, locks_key, open_key, order_id, held, share, fence, payment_ref, status)
  local o = redis.call('HMGET', order_key, 'body', 'total', 'table_id', 'paid_cents', 'shares')
  local shares = o[5] and cjson.decode(o[5]) or {}
  local record = {}
  for k, v in pairs(share) do record[k] = v end
  record.fence, record.paid_at = fence, NOW
  table.insert(shares, record)
  local paid, total = (tonumber(o[4]) or 0) + tonumber(share.amount_cents), tonumber(o[2])
  local json = write_order(order_key, o[1], status, {'paid_cents', paid, 'shares', encode(shares),
                                                     'ref:' .. payment_ref, fence})
  emit('share.paid', o[3], order_id,
       raw_field(encode({share = record, paid_cents = paid, remaining_cents = total - paid}), 'order', json))
  if status == 'open' and paid >= total then
    return mark_paid(order_key, locks_key, open_key, order_id, held, payment_ref, paid), true
  end
  return json, false
end

-- Mark the share held in `slot` of an open order paid: its lock ends (reason paid), then the
-- share joins the paid shares (add_paid_share).
local function mark_share_paid(order_key, locks_key, open_key, order_id, held, slot, payment_ref)
  local lock = held[slot]
  end_lock(locks_key, slot, lock, 'lock.released', {reason = 'paid'})
  held[slot] = nil
  return add_paid_share(order_key, locks_key, open_key, order_id, held, lock.share, lock.fence, payment_ref, 'open')
end

-- Issue 18: what a lock request by an ERP terminal needs, answered inside its one script.
-- authentic: the terminal's record (tl:{s}:terminals) still carries the token hash the
-- coordinator verified (store/auth.py), so a revoked or replaced token is refused atomically
-- with the lock operation, whatever an in-process auth cache still holds.
local function authentic(terminals_key, credential)
  if credential == nil or credential == '' then return true end
  local raw = redis.call('HGET', terminals_key, tostring(ACTOR.terminal_id))
  return raw ~= false and cjson.decode(raw).token_hash == credential
end

-- A copy of a lock for a staff reply whose holder carries `online` (views.staff_holder reads it).
local function seen_lock(lock, online)
  if not online or not lock or lock.holder.role ~= 'erp' then return lock end
  local copy, holder = {}, {}
  for k, v in pairs(lock) do copy[k] = v end
  for k, v in pairs(lock.holder) do holder[k] = v end
  holder.online = online[tostring(holder.terminal_id)] == true
  copy.holder = holder
  return copy
end
