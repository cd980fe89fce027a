-- apply_many.lua: apply.lua for a run of consecutive session writes of one client's pipeline,
-- in one atomic step: the per-call cost of a script is paid once per run.
-- KEYS: the session keys of every command, in order. ARGV[1]: number of commands; then per
-- command: n (its keys), n (descriptor, hint) pairs, argc, and the command's argc arguments.
-- Returns one array element per command: exactly the reply the plain command would give.
local m = tonumber(ARGV[1])
local pos, key = 2, 1
local out = {}
for c = 1, m do
  local n = tonumber(ARGV[pos])
  local refs = pos + 1
  pos = refs + 2 * n
  local argc = tonumber(ARGV[pos])
  local reply = redis.pcall(unpack(ARGV, pos + 1, pos + argc))
  pos = pos + 1 + argc
  if not (type(reply) == 'table' and reply.err) then
    for i = 0, n - 1 do
      reconcile_ref(KEYS[key + i], ARGV[refs + 2 * i], ARGV[refs + 2 * i + 1])
    end
  end
  key = key + n
  out[c] = reply
end
return out
