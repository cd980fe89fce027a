-- resync.lua (Redis Cluster, slot script): reconcile session keys of one slot with their
-- bookkeeping (reconcile.lua) and, with ARGV[#KEYS + 1] = '1', queue the index entry of every
-- owned one again, whatever the owner map says: after a primary failover, index changes made on
-- the lost primary may be gone with it (SESSIONS.REINDEX, the catch-up after a failover).
-- KEYS: the session keys; ARGV[i]: the rule of KEYS[i]. Returns how many changes it queued.
local force = ARGV[#KEYS + 1] == '1'
local changed = 0
for i, k in ipairs(KEYS) do
  local r = tonumber(ARGV[i])
  changed = changed + reconcile(k, r)
  local uid = force and redis.call('HGET', OWNERS, k)
  if uid then
    local d = redis.call('PEXPIRETIME', k)
    if d <= 0 then d = nil end
    changed = changed + emit('a', RULES[r], uid, k, d)
  end
end
return changed
