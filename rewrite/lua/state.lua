-- state.lua (Redis Cluster, slot script): read-only state of session keys of one slot, for
-- SESSIONS.CHECK / REINDEX. KEYS: the session keys; ARGV[i]: the rule of KEYS[i].
-- Returns {the slot's last seq, then per key: owner in the value ('' none), owner map entry
-- ('' none), deadline in ms (0 none)}. The seq orders a removal a repair makes after what the
-- slot's writes queued before it.
local out = {redis.call('GET', SEQ) or '0'}
for i, k in ipairs(KEYS) do
  out[#out + 1] = indexed_owner(k, RULES[tonumber(ARGV[i])]) or ''
  out[#out + 1] = redis.call('HGET', OWNERS, k) or ''
  local d = redis.call('PEXPIRETIME', k)
  if d < 0 then d = 0 end
  out[#out + 1] = d
end
return out
