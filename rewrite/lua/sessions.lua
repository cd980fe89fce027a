-- sessions.lua: SESSIONS.LIST / COUNT / REVOKE for one user, repairing stale entries on the way.
-- ARGV: mode (list|count|revoke), rule, uid.
local mode, r, uid = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local rule = RULES[r]
local members
if rule.layout == 'set' then
  members = redis.call('SMEMBERS', index_key(rule, uid))
elseif rule.layout == 'zset' then
  members = redis.call('ZRANGE', index_key(rule, uid), 0, -1)
elseif numeric(uid) then
  members = redis.call('ZRANGE', rule.ikey, uid, uid, 'BYSCORE')
else
  members = {}
end
local live = {}
for _, m in ipairs(members) do
  local k = session_key(rule, m)
  reconcile(k, r)
  if redis.call('HGET', OWNERS, k) == uid then
    live[#live + 1] = k
  else
    index_rem(rule, uid, k) -- an entry under the wrong user
  end
end
if mode == 'revoke' then
  for _, k in ipairs(live) do
    redis.call('DEL', k)
    reconcile(k, r)
  end
  return #live
end
if mode == 'count' then return #live end
local ids = {}
for i, k in ipairs(live) do ids[i] = string.sub(k, #rule.kpre + 1, #k - #rule.ksuf) end
table.sort(ids)
return ids
