-- flush_refusals.lua: write every table's counted H5 refusals to the audit log (lib.lua
-- bounded_refusal), so an admin reading the log sees them; forget the windows that have ended.
--
-- KEYS[1..4] common (lib.lua)   KEYS[5] refused-requests hash tl:{s}:h5refused
-- ARGV[1..5] common   ARGV[6] window in ms
--
-- Returns {"ok":1,"tables":n} (n = tables whose counts were written or whose window was forgotten).

local K_REFUSED, window_ms = KEYS[5], tonumber(ARGV[6])
local flat = redis.call('HGETALL', K_REFUSED)
local n = 0
for i = 1, #flat, 2 do
  local table_id, st = flat[i], cjson.decode(flat[i + 1])
  if next(st.orders) ~= nil or NOW >= st.since + window_ms then
    n = n + 1
    write_counted(table_id, st)
    if NOW >= st.since + window_ms then
      redis.call('HDEL', K_REFUSED, table_id)
    else
      redis.call('HSET', K_REFUSED, table_id, encode(st))
    end
  end
end
return reply({ok = 1, tables = n})
