#!lua flags=allow-cross-slot-keys,no-writes
-- cnode.lua (Redis Cluster): which of a node's slots have work, in one call per node instead of
-- one per slot. ARGV[1] = 'outbox' (keys: outboxes; a slot has work if its outbox is not empty)
-- or 'due' (ARGV[2]: now in ms, or '' for Redis' clock; keys: ledgers; work if an entry is due); ARGV[3...] the keys,
-- one per slot the node serves. Returns the 1-based positions of the keys with work. A key of a
-- slot that has just moved away is skipped (pcall): its new node is asked on the next round.
local mode, now, out = ARGV[1], ARGV[2], {}
if now == '' then -- due by Redis' clock, which is the one that expires keys
  local t = redis.call('TIME')
  now = string.format('%d', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
end
for i = 3, #ARGV do
  local v
  if mode == 'outbox' then
    v = redis.pcall('LLEN', ARGV[i])
  else
    v = redis.pcall('ZCOUNT', ARGV[i], '-inf', now)
  end
  if type(v) == 'number' and v > 0 then out[#out + 1] = i - 2 end
end
return out
