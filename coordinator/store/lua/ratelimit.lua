-- ratelimit.lua: count one request against a sliding-window limit (ratelimit.py). Standalone (no
-- lib.lua prelude): it touches one key only, so it runs on any node of a Redis Cluster.
--
-- KEYS[1] the limit's hash  (tl:rl:addr:<ip> | tl:{s}:rl:h5:<session_id>)
--         fields w = index of the current window, c = its count, p = the previous window's count
-- ARGV[1] window length in ms   ARGV[2] requests allowed per window
--
-- Returns {1, 0} when the request is counted (allowed), or {0, retry_ms}: refused, and the soonest
-- a request can pass, in ms. A refused request is not counted, so a client that waits as told
-- gets through.
--
-- The sliding window is estimated from two fixed windows (Cloudflare's "sliding window counter"):
-- at a time `elapsed` ms into window w, the load is p * (window - elapsed) / window + c, i.e. the
-- previous window's requests are assumed evenly spread and only its still-covered part counts.
-- Time is the Redis server clock, so every coordinator process counts the same windows.

local window, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local w = math.floor(now / window)

local h = redis.call('HMGET', KEYS[1], 'w', 'c', 'p')
local stored_w, c, p = tonumber(h[1]), tonumber(h[2]) or 0, tonumber(h[3]) or 0
if stored_w ~= w then
  -- Roll over: the count of window w-1 becomes "previous"; anything older no longer covers now.
  if stored_w == w - 1 then p = c else p = 0 end
  c = 0
end

local start = w * window
local elapsed = now - start
if p * (window - elapsed) / window + c + 1 <= limit then
  redis.call('HSET', KEYS[1], 'w', w, 'c', c + 1, 'p', p)
  redis.call('PEXPIRE', KEYS[1], 2 * window)
  return {1, 0}
end

-- Refused: find the first instant at which one more request fits.
local retry_at
local room = limit - 1 - c
if room >= 0 and p > 0 then
  -- Still in this window, once enough of the previous window has slid out of view.
  retry_at = start + window - math.floor(room * window / p)
else
  -- Only in the next window, where this window's c is the part sliding out.
  local next_start = start + window
  if c <= 0 then
    retry_at = next_start
  else
    retry_at = next_start + window - math.floor((limit - 1) * window / c)
  end
end
if retry_at <= now then retry_at = now + 1 end
return {0, retry_at - now}
