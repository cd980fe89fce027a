-- cindex.lua (Redis Cluster): make one index change an outbox entry names, on the index key's
-- node. KEYS: applied (hash: session key -> seq of the last change made for it in this slot),
-- tomb (zset: session keys whose last change here was a removal, by seq), the index key.
-- ARGV: seq, kind ('a' add / 'r' remove), rule, score, uid, session key.
-- A change older than the last one made for the session is skipped: entries may be applied
-- twice (a drainer and the writing proxy) and by several proxies at once, and an owner change
-- A -> B must never end with the session in A's index. Every entry has its own seq, so an equal
-- one is the same entry again (made again: idempotent). Returns 1 if made, 0 if skipped.
local applied, tomb = KEYS[1], KEYS[2]
local seq, kind, r, uid, k = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3]), ARGV[5], ARGV[6]
local rule = RULES[r]
local last = tonumber(redis.call('HGET', applied, k) or '0')
if seq < last then return 0 end
if kind == 'a' then
  local deadline = nil
  if rule.layout == 'zset' and ARGV[4] ~= '+inf' then deadline = ARGV[4] end
  index_add(rule, uid, k, deadline)
  redis.call('ZREM', tomb, k)
else
  index_rem(rule, uid, k)
  redis.call('ZADD', tomb, ARGV[1], k)
end
redis.call('HSET', applied, k, ARGV[1])
-- A removed session's record is kept for 10 minutes, the longest a late duplicate of one of its
-- changes may wait (an applier gives up on entries it read longer ago); two are pruned per call.
-- (Numbers go to Redis as strings made here: Lua's own conversion keeps 14 digits only.)
local old = redis.call('ZRANGE', tomb, '-inf', string.format('%d', seq - 600000000), 'BYSCORE', 'LIMIT', 0, 2)
for _, m in ipairs(old) do
  if tonumber(redis.call('HGET', applied, m)) == tonumber(redis.call('ZSCORE', tomb, m)) then redis.call('HDEL', applied, m) end
  redis.call('ZREM', tomb, m)
end
return 1
