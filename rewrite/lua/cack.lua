-- cack.lua (Redis Cluster): drop the entries at the head of a slot's outbox (KEYS[1]) whose seq
-- is at most ARGV[1], once they are applied. By seq, not by count: another proxy may have
-- dropped some of them already. Returns the number dropped.
local upto, n = tonumber(ARGV[1]), 0
while true do
  local e = redis.call('LINDEX', KEYS[1], 0)
  if not e then return n end
  local seq = tonumber(string.match(e, '^%d+') or '')
  -- An entry without a seq was not written by the proxy: dropped, as the applier skips it.
  if seq and seq > upto then return n end
  redis.call('LPOP', KEYS[1])
  n = n + 1
end
