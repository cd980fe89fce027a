-- reap.lua: clean expired or evicted sessions out of the index. Idempotent, so any number of
-- reapers may run it. ARGV[1] = 'due': take at most ARGV[3] ledger entries due by ARGV[2] (ms);
-- ARGV[1] = 'keys': the session keys in KEYS (from expired/evicted events).
-- A session that still exists (its TTL was extended behind the proxy) is re-scored, a gone one
-- leaves index, owner map and ledger. Touching the key also makes Redis expire it lazily.
-- Returns {entries looked at, re-scored, deadline of each removed entry...}.
local keys = KEYS
if ARGV[1] == 'due' then
  -- Due by Redis' clock, which is the one that expires keys (not the reaper host's), unless
  -- the caller gives a time (tests drive the reaper with a fake clock).
  local now = tonumber(ARGV[2])
  if not now then
    local t = redis.call('TIME')
    now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  keys = redis.call('ZRANGE', LEDGER, '-inf', now, 'BYSCORE', 'LIMIT', 0, tonumber(ARGV[3]))
end
local out = {#keys, 0}
for _, k in ipairs(keys) do
  local r = rule_of(k)
  local deadline = redis.call('ZSCORE', LEDGER, k)
  if r == nil then
    redis.call('ZREM', LEDGER, k)
  else
    reconcile(k, r)
    if redis.call('EXISTS', k) == 1 then
      out[2] = out[2] + 1
    elseif deadline then
      out[#out + 1] = deadline
    end
  end
end
return out
