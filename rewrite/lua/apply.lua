-- apply.lua: run one client command and keep the index in step, in one atomic step.
-- KEYS: the session keys the command touches. ARGV[1]: n, the number of KEYS; then per key two
-- entries: a descriptor and an owner hint (see reconcile_ref in common.lua); then the command and
-- its arguments, as sent. This runs for every session write: keep it lean.
--
-- The script stays in RESP2 even for a RESP3 client: no intercepted command replies with a map,
-- set or double, and RESP2's Lua false keeps a null's place inside an array (a RESP3 null would
-- become nil and end it); Redis turns the nulls back into RESP3 nulls for the client.
local n = tonumber(ARGV[1])
-- pcall, not call: an error reply then reaches the client byte for byte, as from the plain command.
local reply = redis.pcall(unpack(ARGV, 2 * n + 2))
if type(reply) == 'table' and reply.err then return reply end
for i = 1, n do
  reconcile_ref(KEYS[i], ARGV[2 * i], ARGV[1 + 2 * i])
end
return reply
