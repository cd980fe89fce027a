-- common.lua: shared by every sessionproxy script. The generated header before it defines
-- OWNERS (hash: session key -> owner), LEDGER (zset: session key -> deadline ms) and RULES;
-- CLUSTER, and on a Redis Cluster the slot's OUTBOX (list of index changes) and SEQ (string).

-- numeric: a decimal integer that a sorted-set score (a double) holds exactly, |n| < 2^53,
-- written canonically; the same test as rewrite.NumericUID.
local function numeric(uid)
  if not string.match(uid, '^%-?%d+$') or #uid > 17 then return false end
  local n = tonumber(uid)
  return n ~= nil and math.abs(n) < 2^53 and string.format('%d', n) == uid
end

-- owner_of reads the owner straight from the session value; nil when the key is missing, has
-- another type, or carries no usable owner.
local function owner_of(k, rule)
  if rule.field then
    local v = redis.pcall('HGET', k, rule.field)
    if type(v) ~= 'string' or v == '' then return nil end
    return v
  end
  local raw = redis.pcall('GET', k)
  -- cjson stops at a NUL byte: JSON followed by one and anything else is not valid JSON.
  if type(raw) ~= 'string' or string.find(raw, '\0', 1, true) then return nil end
  local ok, doc = pcall(cjson.decode, raw)
  if not ok then return nil end
  for part in string.gmatch(rule.path, '[^.]+') do
    if type(doc) ~= 'table' then return nil end
    doc = doc[part]
  end
  if type(doc) == 'string' and doc ~= '' then return doc end
  if type(doc) == 'number' and doc == math.floor(doc) and math.abs(doc) < 2^53 then
    return string.format('%d', doc)
  end
  return nil
end

-- rule_of is the index of the first rule whose pattern matches k, or nil.
local function rule_of(k)
  for i, rule in ipairs(RULES) do
    if #k >= #rule.kpre + #rule.ksuf and string.sub(k, 1, #rule.kpre) == rule.kpre
        and (rule.ksuf == '' or string.sub(k, -#rule.ksuf) == rule.ksuf) then
      return i
    end
  end
  return nil
end

local function index_key(rule, uid)
  if rule.layout == 'global-zset' then return rule.ikey end
  return rule.ipre .. uid .. rule.isuf
end

local function member(rule, k)
  if rule.layout == 'global-zset' then return k end
  return string.sub(k, #rule.kpre + 1, #k - #rule.ksuf)
end

local function session_key(rule, m)
  if rule.layout == 'global-zset' then return m end
  return rule.kpre .. m .. rule.ksuf
end

-- next_seq (Redis Cluster only) is the slot's next sequence number, recorded in SEQ: it orders
-- the slot's index changes (and so each session's) and only grows: the larger of the last one
-- + 1 and Redis' clock in microseconds, so that it grows on across a failover that lost the last
-- ones. Each entry has its own: an applier that reads a batch acks up to its last seq, and an
-- equal seq on the index side can only be the same entry applied again.
local seq
local function next_seq()
  if seq then
    seq = seq + 1
  else
    local t = redis.call('TIME')
    seq = tonumber(t[1]) * 1000000 + tonumber(t[2])
    local last = tonumber(redis.call('GET', SEQ) or '0')
    if seq <= last then seq = last + 1 end
  end
  redis.call('SET', SEQ, string.format('%d', seq))
  return seq
end

-- emit (Redis Cluster only) queues an index change in the slot's outbox instead of making it:
-- the index key lives in another slot, usually on another node. An entry is
-- "<seq> <a|r><rule> <score|-> <#uid> <uid><session key>".
local function emit(kind, rule, uid, k, deadline)
  next_seq()
  local r = 1
  while RULES[r] ~= rule do r = r + 1 end
  local score = '-'
  if kind == 'a' then
    if rule.layout == 'zset' then score = deadline or '+inf'
    elseif rule.layout == 'global-zset' then score = uid end
  end
  if type(score) == 'number' then score = string.format('%d', score) end
  redis.call('RPUSH', OUTBOX, string.format('%d %s%d %s %d ', seq, kind, r, score, #uid) .. uid .. k)
  return 1
end

-- index_add returns 1 when the entry was new. Index operations use pcall: an index key that
-- holds another type (an app's own key named like one) must not fail the client's write after
-- it ran; the entry is then missing, for SESSIONS.CHECK to report.
local function index_add(rule, uid, k, deadline)
  if CLUSTER then return emit('a', rule, uid, k, deadline) end
  local n
  if rule.layout == 'set' then
    n = redis.pcall('SADD', index_key(rule, uid), member(rule, k))
  elseif rule.layout == 'zset' then
    n = redis.pcall('ZADD', index_key(rule, uid), deadline or '+inf', member(rule, k))
  else
    n = redis.pcall('ZADD', rule.ikey, uid, k)
  end
  if type(n) == 'table' then return 0 end
  return n
end

local function index_rem(rule, uid, k)
  if CLUSTER then return emit('r', rule, uid, k) end
  local n
  if rule.layout == 'set' then
    n = redis.pcall('SREM', index_key(rule, uid), member(rule, k))
  else
    n = redis.pcall('ZREM', index_key(rule, uid), member(rule, k))
  end
  if type(n) == 'table' then return 0 end
  return n
end

-- indexed_owner is the owner the index should record: global-zset needs a numeric one.
local function indexed_owner(k, rule)
  local uid = owner_of(k, rule)
  if uid and rule.layout == 'global-zset' and not numeric(uid) then return nil end
  return uid
end

-- reconcile brings the index, owner map and ledger of session key k (rule r) in line with the
-- key itself, whatever happened to it. hint, if given, is the key's owner (known from the
-- command just run); keepttl says its TTL did not change; old, if given, is what the owner map
-- held (false: nothing), already read by the caller. Idempotent; returns 1 if an index entry was
-- added or removed.
local function reconcile(k, r, hint, keepttl, old)
  local rule = RULES[r]
  if old == nil then old = redis.call('HGET', OWNERS, k) end
  if not old then old = nil end
  local uid
  if hint then
    uid = hint
    if uid == '' or (rule.layout == 'global-zset' and not numeric(uid)) then uid = nil end
  else
    uid = indexed_owner(k, rule)
  end
  -- A hash write that kept the TTL of an owned session leaves its deadline as it was: only the
  -- owner may need an update (none at all if it stayed). Not for zset indexes, whose scores are
  -- deadlines: the write may have re-created a key deleted behind the proxy, without a TTL.
  -- (For the others, a deadline left in the ledger that way is corrected by the sweep when it
  -- falls due.)
  local samettl = keepttl and old and uid and rule.layout ~= 'zset'
  if samettl and old == uid then return 0 end
  local deadline = nil
  if uid and not samettl then
    local t = redis.call('PEXPIRETIME', k)
    if t > 0 then deadline = t end
  end
  local changed = 0
  if old and old ~= uid then
    changed = index_rem(rule, old, k)
    if changed > 0 then changed = 1 end
  end
  if uid then
    if index_add(rule, uid, k, deadline) > 0 then changed = 1 end
    if old ~= uid then redis.call('HSET', OWNERS, k, uid) end
  elseif old then
    redis.call('HDEL', OWNERS, k)
  end
  if samettl then
    return changed
  end
  if deadline then
    redis.call('ZADD', LEDGER, deadline, k)
  else
    -- Also without any owner on record: a ledger entry can outlive a lost owner map.
    redis.call('ZREM', LEDGER, k)
  end
  return changed
end

-- reconcile_ref reconciles one key named by a rewritten command: desc is "<rule>[@<db>][k]"
-- (@db: the key is in that DB, and such keys come last because this SELECTs it; k: the command
-- cannot change the TTL); hint is "=<uid>", the owner after the successful write, or "".
local function reconcile_ref(k, desc, hint)
  local keep = string.byte(desc, -1) == 107 -- 'k'
  if keep then desc = string.sub(desc, 1, -2) end
  local at = string.find(desc, '@', 1, true)
  if at then
    redis.call('SELECT', string.sub(desc, at + 1))
    desc = string.sub(desc, 1, at - 1)
  end
  if hint == '' then hint = nil else hint = string.sub(hint, 2) end
  return reconcile(k, tonumber(desc), hint, keep)
end
