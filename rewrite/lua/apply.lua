-- apply.lua: run one client command and keep the index in step, in one atomic step.
-- KEYS: the session keys the command touches. ARGV[1]: client protocol (2 or 3); ARGV[2]: n,
-- the number of KEYS; then per key two entries: a descriptor and an owner hint (see
-- reconcile_ref in common.lua); then the command and its arguments, as sent.
-- This runs for every session write: keep it lean.
local n = tonumber(ARGV[2])
local resp3 = ARGV[1] == '3'
if resp3 then redis.setresp(3) end
-- pcall, not call: an error reply then reaches the client byte for byte, as from the plain command.
local reply = redis.pcall(unpack(ARGV, 2 * n + 3))
if resp3 then redis.setresp(2) end
if type(reply) == 'table' and reply.err then return reply end
for i = 1, n do
  reconcile_ref(KEYS[i], ARGV[1 + 2 * i], ARGV[2 + 2 * i])
end
return reply
