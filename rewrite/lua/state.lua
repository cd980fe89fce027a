-- state.lua (Redis Cluster, slot script): the state of session keys of one slot, for
-- SESSIONS.CHECK / REINDEX. KEYS: the session keys; ARGV[i]: the rule of KEYS[i].
-- Returns {a new seq of the slot, then per key: owner in the value ('' none), owner map entry
-- ('' none), deadline in ms (0 none)}. The seq orders a removal a repair makes after every
-- change the slot queued before, and before every later one (it is recorded, so the next write
-- gets a larger one; a seq read back from SEQ could be older than a change applied before a
-- failover lost it).
local out = {string.format('%d', next_seq())}
for i, k in ipairs(KEYS) do
  out[#out + 1] = indexed_owner(k, RULES[tonumber(ARGV[i])]) or ''
  out[#out + 1] = redis.call('HGET', OWNERS, k) or ''
  local d = redis.call('PEXPIRETIME', k)
  if d < 0 then d = 0 end
  out[#out + 1] = d
end
return out
