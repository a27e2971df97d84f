-- emit.lua: append one event that no lock script produced (config.updated, terminal.status,
-- terminal changes), or an audit-only entry.
--
-- KEYS[1..4] common (lib.lua)
-- ARGV[1..5] common   ARGV[6] name   ARGV[7] table_id or ""   ARGV[8] order_id or ""
-- ARGV[9] data JSON   ARGV[10] "audit" to write the audit log only (no seq, no live event)
--
-- Returns {"ok":1,"seq":n} (seq 0 for an audit-only entry).

local name, data = ARGV[6], ARGV[9]
local table_id = ARGV[7] ~= '' and ARGV[7] or nil
local order_id = ARGV[8] ~= '' and ARGV[8] or nil
if ARGV[10] == 'audit' then
  local entry = raw_field(encode({type = 'audit', seq = 0, ts = NOW, name = name, store_id = STORE,
                                        table_id = table_id or cjson.null,
                                        order_id = order_id or cjson.null}), 'data', data)
  redis.call('XADD', K_AUDIT, 'MAXLEN', '~', AUDIT_MAXLEN, '*', 'e', entry, 'actor', ARGV[5])
  return reply({ok = 1, seq = 0})
end
return reply({ok = 1, seq = emit(name, table_id, order_id, data)})
