-- emit.lua: append one event that no lock script produced (config.updated, terminal.status,
-- terminal changes), an audit-only entry, or a refused H5 request's event under the audit bound.
--
-- KEYS[1..4] common (lib.lua)   KEYS[5] refused-requests hash tl:{s}:h5refused (mode "refusal" only)
-- ARGV[1..5] common   ARGV[6] name   ARGV[7] table_id or ""   ARGV[8] order_id or ""
-- ARGV[9] data JSON   ARGV[10] mode: "" (event) | "audit" (the audit log only: no seq, no live
-- event) | "refusal" (an H5 session's refused request, e.g. order.addon_refused: lib.lua
-- bounded_refusal writes it or only counts it)
-- ARGV[11] H5 refusal window in ms   ARGV[12] H5 refusals written per table and window
-- ARGV[13] the refusal's code (mode "refusal")
--
-- Returns {"ok":1,"seq":n} (seq 0 for an audit-only entry, or a refusal only counted;
-- "written": true|false in mode "refusal").

local name, data, mode = ARGV[6], ARGV[9], ARGV[10]
local table_id = ARGV[7] ~= '' and ARGV[7] or nil
local order_id = ARGV[8] ~= '' and ARGV[8] or nil
if mode == 'audit' then
  local entry = raw_field(encode({type = 'audit', seq = 0, ts = NOW, name = name, store_id = STORE,
                                        table_id = table_id or cjson.null,
                                        order_id = order_id or cjson.null}), 'data', data)
  redis.call('XADD', K_AUDIT, 'MAXLEN', '~', AUDIT_MAXLEN, '*', 'e', entry, 'actor', ARGV[5])
  return reply({ok = 1, seq = 0})
end
if mode == 'refusal' then
  local seq = 0
  local function write() seq = emit(name, table_id, order_id, data) end
  local written = bounded_refusal(KEYS[5], tonumber(ARGV[11]), tonumber(ARGV[12]), table_id or '',
                                  order_id or '', ARGV[13], write)
  return reply({ok = 1, seq = seq, written = written})
end
return reply({ok = 1, seq = emit(name, table_id, order_id, data)})
