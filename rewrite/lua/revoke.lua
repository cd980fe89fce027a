-- revoke.lua (Redis Cluster, slot script): SESSIONS.REVOKE's step in one slot. KEYS: session
-- keys of the slot; ARGV[i]: the rule of KEYS[i]; ARGV[#KEYS + 1]: the user. Deletes each key
-- that exists and is recorded as the user's, in the same step as the check (another write may
-- have given it to someone else since the index was read), and queues its index change.
-- Returns how many it deleted.
local uid, n = ARGV[#KEYS + 1], 0
for i, k in ipairs(KEYS) do
  if redis.call('HGET', OWNERS, k) == uid and redis.call('EXISTS', k) == 1 then
    redis.call('DEL', k)
    reconcile(k, tonumber(ARGV[i]))
    n = n + 1
  end
end
return n
