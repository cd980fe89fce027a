-- apply.lua: run one client command and keep the index in step, in one atomic step.
-- KEYS: the session keys the command touches. ARGV[1]: client protocol (2 or 3); ARGV[2]: n,
-- the number of KEYS; ARGV[3..2+n]: "<rule>" or "<rule>@<db>" per key (keys of another DB
-- last: the script SELECTs it); ARGV[3+n..]: the command and its arguments, as sent.
local n = tonumber(ARGV[2])
local cmd = {}
for i = n + 3, #ARGV do cmd[#cmd + 1] = ARGV[i] end
if ARGV[1] == '3' then redis.setresp(3) end
-- pcall, not call: an error reply then reaches the client byte for byte, as from the plain command.
local reply = redis.pcall(unpack(cmd))
redis.setresp(2)
if type(reply) == 'table' and reply.err then return reply end
for i = 1, n do
  local r, db = string.match(ARGV[2 + i], '^(%d+)@?(%d*)$')
  if db ~= '' then redis.call('SELECT', db) end
  reconcile(KEYS[i], tonumber(r))
end
return reply
