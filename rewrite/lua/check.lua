-- check.lua: read-only comparison of index and truth for a batch.
-- ARGV[1] = 'keys': KEYS are session keys, ARGV[i+1] their rules; returns the owned keys whose
--   owner is not indexed under that owner, not recorded in the owner map, or whose deadline is
--   not recorded (in the ledger, and as the score of a zset layout's entry) (missing).
-- ARGV[1] = 'ledger': KEYS are ledger entries, ARGV[i+1] their rules; returns those whose
--   session has no owner or no TTL (orphaned).
-- ARGV[1] = 'owners': KEYS are owner-map entries, ARGV[i+1] their rules; returns those whose
--   recorded owner is not the key's owner (stale bookkeeping: the key is gone or re-owned).
-- ARGV[1] = 'index': KEYS[1] is an index key, ARGV[2] rule, ARGV[3] uid, ARGV[4..] members;
--   returns the members whose session is gone or owned by another user (stale).
local out = {}
if ARGV[1] == 'keys' then
  for i, k in ipairs(KEYS) do
    local r = tonumber(ARGV[i + 1])
    local rule = RULES[r]
    local uid = indexed_owner(k, rule)
    if uid then
      local deadline = redis.call('PEXPIRETIME', k)
      -- pcall: an index key of another type counts as a missing entry, not a failed check.
      local found
      if rule.layout == 'set' then
        found = redis.pcall('SISMEMBER', index_key(rule, uid), member(rule, k)) == 1
      elseif rule.layout == 'zset' then
        local score = redis.pcall('ZSCORE', index_key(rule, uid), member(rule, k))
        found = type(score) == 'string' and tonumber(score) == (deadline > 0 and deadline or math.huge)
      else
        local score = redis.pcall('ZSCORE', rule.ikey, k)
        found = type(score) == 'string' and score == uid
      end
      found = found and redis.call('HGET', OWNERS, k) == uid
      if found and deadline > 0 then
        found = tonumber(redis.call('ZSCORE', LEDGER, k)) == deadline
      end
      if not found then out[#out + 1] = k end
    end
  end
  return out
end
if ARGV[1] == 'ledger' then
  -- KEYS are ledger entries: an entry is orphaned unless its session is owned and has a TTL.
  for i, k in ipairs(KEYS) do
    if indexed_owner(k, RULES[tonumber(ARGV[i + 1])]) == nil or redis.call('PEXPIRETIME', k) <= 0 then
      out[#out + 1] = k
    end
  end
  return out
end
if ARGV[1] == 'owners' then
  for i, k in ipairs(KEYS) do
    if redis.call('HGET', OWNERS, k) ~= indexed_owner(k, RULES[tonumber(ARGV[i + 1])]) then
      out[#out + 1] = k
    end
  end
  return out
end
local r, uid = tonumber(ARGV[2]), ARGV[3]
local rule = RULES[r]
for i = 4, #ARGV do
  local k = session_key(rule, ARGV[i])
  local owner = indexed_owner(k, rule)
  if rule.layout == 'global-zset' then uid = redis.call('ZSCORE', rule.ikey, k) or '' end
  if owner ~= uid then out[#out + 1] = ARGV[i] end
end
return out
