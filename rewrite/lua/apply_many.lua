-- apply_many.lua: apply.lua for a run of consecutive session writes of one client's pipeline,
-- in one atomic step: the per-call cost of a script is paid once per run.
-- KEYS: the session keys of every command, in order. ARGV[1]: the run's shape, two bytes (a, b)
-- per command; then per command, in one of two forms:
--   fast (a > 0): the command's arguments without its key (a of them; the key is its KEYS
--            entry), the owner value being the b-th. One key, in the current DB, a hash write
--            that sets the owner field and keeps the TTL, in a rule whose layout has no deadline
--            scores: when the owner map already says that owner there is nothing to update.
--            This is every re-save of a session, and it carries as many arguments as the plain
--            command: keep it lean.
--   general (a = 0): argc, n (its keys), n (descriptor, hint) pairs (see reconcile_ref), then
--            the command's argc arguments.
-- Returns one array element per command: exactly the reply the plain command would give.
local shape = ARGV[1]
local pos, key = 2, 1
local out = {}
for c = 1, #shape / 2 do
  local a, b = string.byte(shape, 2 * c - 1, 2 * c)
  if a > 0 then
    local k = KEYS[key]
    local reply = redis.pcall(ARGV[pos], k, unpack(ARGV, pos + 1, pos + a - 1))
    if not (type(reply) == 'table' and reply.err) then
      local uid = ARGV[pos + b - 1]
      local old = redis.call('HGET', OWNERS, k)
      if old ~= uid then reconcile(k, rule_of(k), uid, true, old) end
    end
    pos = pos + a
    key = key + 1
    out[c] = reply
  else
    local argc, n = tonumber(ARGV[pos]), tonumber(ARGV[pos + 1])
    local refs = pos + 2
    local first = refs + 2 * n
    local reply = redis.pcall(unpack(ARGV, first, first + argc - 1))
    pos = first + argc
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
