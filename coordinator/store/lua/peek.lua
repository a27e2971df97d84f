-- peek.lua: what `check` needs to ask the pure rules (engine.check), read in one step; changes nothing.
--
-- KEYS[1] order hash tl:{s}:order:{o}   KEYS[2] locks hash tl:{s}:locks:{o}   KEYS[3] config hash
-- KEYS[4] terminals hash tl:{s}:terminals
-- ARGV[1] terminal_id   ARGV[2] the terminal's token hash ("" = not checked: not an ERP terminal)
--
-- Returns JSON text {"now":ms,"auth":bool,"order":Order|null,"locks":[Lock...],"config":{field:value}}:
-- the order's JSON, the lock JSONs (with tokens, expired ones too: the caller filters on now) and
-- the stored config values are passed through as the JSON text they are stored as.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local auth = true
if ARGV[2] ~= '' then
  local raw = redis.call('HGET', KEYS[4], ARGV[1])
  auth = raw ~= false and cjson.decode(raw).token_hash == ARGV[2]
end

local order = redis.call('HGET', KEYS[1], 'json') or 'null'
local locks = redis.call('HVALS', KEYS[2])
local stored = redis.call('HGETALL', KEYS[3])
local config = {}
for i = 1, #stored, 2 do table.insert(config, cjson.encode(stored[i]) .. ':' .. stored[i + 1]) end

return '{"now":' .. string.format('%d', now) .. ',"auth":' .. tostring(auth) .. ',"order":' .. order ..
       ',"locks":[' .. table.concat(locks, ',') .. '],"config":{' .. table.concat(config, ',') .. '}}'
