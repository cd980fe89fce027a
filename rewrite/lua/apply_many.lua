-- apply_many.lua: apply.lua for a run of consecutive session writes of one client's pipeline,
-- in one atomic step: the per-call cost of a script is paid once per run.
-- KEYS: the session keys of every command, in order. ARGV[1]: number of commands; then per
-- command one of two forms:
--   fast:    argc (> 0), owner, the command's argc arguments. One key, in the current DB, a
--            hash write that sets the owner field to owner and keeps the TTL, in a rule whose
--            layout has no deadline scores: when the owner map already says owner, there is
--            nothing to update. This is every re-save of a session; keep it lean.
--   general: -argc, n (its keys), n (descriptor, hint) pairs (see reconcile_ref), the arguments.
-- Returns one array element per command: exactly the reply the plain command would give.
local m = tonumber(ARGV[1])
local pos, key = 2, 1
local out = {}
for c = 1, m do
  local argc = tonumber(ARGV[pos])
  if argc > 0 then
    local reply = redis.pcall(unpack(ARGV, pos + 2, pos + 1 + argc))
    if not (type(reply) == 'table' and reply.err) then
      local k, uid = KEYS[key], ARGV[pos + 1]
      local old = redis.call('HGET', OWNERS, k)
      if old ~= uid then reconcile(k, rule_of(k), uid, true, old) end
    end
    pos = pos + 2 + argc
    key = key + 1
    out[c] = reply
  else
    local n = tonumber(ARGV[pos + 1])
    local refs = pos + 2
    pos = refs + 2 * n
    local reply = redis.pcall(unpack(ARGV, pos, pos - argc - 1))
    pos = pos - argc
    if not (type(reply) == 'table' and reply.err) then
      for i = 0, n - 1 do
        reconcile_ref(KEYS[key + i], ARGV[refs + 2 * i], ARGV[refs + 2 * i + 1])
      end
    end
    key = key + n
    out[c] = reply
  end
end
return out
