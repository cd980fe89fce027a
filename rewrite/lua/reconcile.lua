-- reconcile.lua: repair the index entries of a batch of session keys (backfill, eviction repair,
-- ledger sweep). KEYS: session keys; ARGV[i]: the rule of KEYS[i]. Returns how many index
-- entries were added or removed.
local changed = 0
for i, k in ipairs(KEYS) do
  changed = changed + reconcile(k, tonumber(ARGV[i]))
end
return changed
