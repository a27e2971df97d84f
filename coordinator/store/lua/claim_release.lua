-- claim_release.lua: give up an idempotency claim, but only if it is still the caller's own.
-- Standalone (no lib.lua prelude): h5/addons.py runs it (scripts.claim_release) when an H5
-- add-items request fails,
-- so a retry with the same request_id may try again at once.
--
-- KEYS[1] the claim key (tl:{s}:req:<table_id>:<request_id>)
-- ARGV[1] the value the caller SET NX'ed (its pending marker, with a nonce)
--
-- Returns 1 when the claim was deleted, 0 when the key holds anything else: the settled result,
-- or — after our marker expired — another request's claim, which must not be touched.

if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
