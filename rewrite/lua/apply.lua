-- apply.lua: run one client command and keep the index in step, in one atomic step.
-- KEYS: the session keys the command touches. ARGV[1]: client protocol (2 or 3); ARGV[2]: n,
-- the number of KEYS; then per key two entries: a descriptor "<rule>[@<db>][k]" (@db: the key
-- is in that DB, and such keys come last because the script SELECTs it; k: the command cannot
-- change the TTL) and an owner hint ("=<uid>": the owner after a successful write, "" unknown);
-- then the command and its arguments, as sent. This runs for every session write: keep it lean.
local n = tonumber(ARGV[2])
local resp3 = ARGV[1] == '3'
if resp3 then redis.setresp(3) end
-- pcall, not call: an error reply then reaches the client byte for byte, as from the plain command.
local reply = redis.pcall(unpack(ARGV, 2 * n + 3))
if resp3 then redis.setresp(2) end
if type(reply) == 'table' and reply.err then return reply end
for i = 1, n do
  local d = ARGV[1 + 2 * i]
  local keep = string.byte(d, -1) == 107 -- 'k'
  if keep then d = string.sub(d, 1, -2) end
  local at = string.find(d, '@', 1, true)
  if at then
    redis.call('SELECT', string.sub(d, at + 1))
    d = string.sub(d, 1, at - 1)
  end
  local hint = ARGV[2 + 2 * i]
  if hint == '' then hint = nil else hint = string.sub(hint, 2) end
  reconcile(KEYS[i], tonumber(d), hint, keep)
end
return reply
