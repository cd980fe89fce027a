-- prune.lua: repair the entries of one index key: drop those whose session is gone or owned by
-- someone else. Returns how many entries were added or removed.
-- KEYS[1]: the index key. ARGV: rule, uid (ignored for global-zset), then members. Returns how many were removed.
local r, uid = tonumber(ARGV[1]), ARGV[2]
local rule = RULES[r]
local removed = 0
for i = 3, #ARGV do
  local k = session_key(rule, ARGV[i])
  -- reconcile fixes whatever the key itself implies (and re-scores or removes a global-zset
  -- member, which is unique); an entry left under this uid for another owner goes after.
  removed = removed + reconcile(k, r)
  if rule.layout ~= 'global-zset' and redis.call('HGET', OWNERS, k) ~= uid then
    removed = removed + index_rem(rule, uid, k)
  end
end
return removed
