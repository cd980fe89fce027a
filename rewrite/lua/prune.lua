-- prune.lua: drop the entries of one index key whose session is gone or owned by someone else.
-- KEYS[1]: the index key. ARGV: rule, uid (ignored for global-zset), then members. Returns how many were removed.
local r, uid = tonumber(ARGV[1]), ARGV[2]
local rule = RULES[r]
local removed = 0
for i = 3, #ARGV do
  local k = session_key(rule, ARGV[i])
  local fixed = reconcile(k, r)
  if rule.layout == 'global-zset' then
    -- a member is unique and reconcile has re-scored or removed it
    removed = removed + fixed
  elseif redis.call('HGET', OWNERS, k) ~= uid then
    removed = removed + index_rem(rule, uid, k)
  end
end
return removed
