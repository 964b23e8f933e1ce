-- Replace reservations by real counts and release a request's slots, atomically.
-- KEYS: window keys, then budget keys, then slot keys.
-- ARGV: nw, nb, ns, slot_id, then (bucket_index, delta) per window, delta per budget.
local nw, nb, ns = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local slot_id = ARGV[4]
local a = 5
for i = 1, nw do
  local index, delta = ARGV[a], tonumber(ARGV[a + 1])
  a = a + 2
  -- An expired bucket no longer counts: correcting it would resurrect it.
  if delta ~= 0 and redis.call('HEXISTS', KEYS[i], index) == 1 then
    if redis.call('HINCRBY', KEYS[i], index, delta) < 0 then
      redis.call('HSET', KEYS[i], index, 0)
    end
  end
end
for i = 1, nb do
  local delta = tonumber(ARGV[a])
  a = a + 1
  local key = KEYS[nw + i]
  if delta ~= 0 and redis.call('EXISTS', key) == 1 then
    if redis.call('INCRBY', key, delta) < 0 then
      redis.call('SET', key, 0, 'KEEPTTL')
    end
  end
end
for i = 1, ns do
  redis.call('ZREM', KEYS[nw + nb + i], slot_id)
end
return 1
