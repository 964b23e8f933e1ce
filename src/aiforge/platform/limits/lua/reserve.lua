-- Check-and-reserve every limit of one request (key and project) atomically.
-- Mirrors MemoryStore._check/_apply; the arithmetic is windows.py's.
-- KEYS: window keys, then budget keys, then slot keys.
-- ARGV: now, now_index, n, window_ttl_ms, nw, nb, ns, slot_id, lease_until, slot_expires_at_ms,
--       then (limit, cost) per window, (limit, cost, expires_at_ms) per budget, limit per slot.
local now = tonumber(ARGV[1])
local now_index = tonumber(ARGV[2])
local oldest = now_index - tonumber(ARGV[3])
local window_ttl_ms = tonumber(ARGV[4])
local nw, nb, ns = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local slot_id, lease_until, slot_expires_at_ms = ARGV[8], ARGV[9], tonumber(ARGV[10])
local first_arg = 11

local function fits(used, cost, limit)
  if cost <= 0 then return used < limit end
  return used + cost <= limit
end

local a = first_arg
for i = 1, nw do
  local key = KEYS[i]
  local limit, cost = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  a = a + 2
  local flat = redis.call('HGETALL', key)
  local used, live = 0, {}
  for j = 1, #flat, 2 do
    local index = tonumber(flat[j])
    if index < oldest then
      redis.call('HDEL', key, flat[j])
    else
      -- Newer buckets count too: another gateway may have read its clock later.
      used = used + tonumber(flat[j + 1])
      live[#live + 1] = flat[j]
      live[#live + 1] = flat[j + 1]
    end
  end
  if not fits(used, cost, limit) then return {'window', i - 1, used, live, ''} end
end
for i = 1, nb do
  local key = KEYS[nw + i]
  local limit, cost = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  a = a + 3
  local used = tonumber(redis.call('GET', key) or '0')
  if not fits(used, cost, limit) then return {'budget', i - 1, used, {}, ''} end
end
for i = 1, ns do
  local key = KEYS[nw + nb + i]
  local limit = tonumber(ARGV[a])
  a = a + 1
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  local held = redis.call('ZCARD', key)
  if held >= limit then
    local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    return {'slot', i - 1, held, {}, first[2] or ''}
  end
end

a = first_arg
for i = 1, nw do
  local cost = tonumber(ARGV[a + 1])
  a = a + 2
  if cost > 0 then
    redis.call('HINCRBY', KEYS[i], now_index, cost)
    redis.call('PEXPIRE', KEYS[i], window_ttl_ms)
  end
end
for i = 1, nb do
  local cost, expires_at_ms = tonumber(ARGV[a + 1]), ARGV[a + 2]
  a = a + 3
  redis.call('INCRBY', KEYS[nw + i], cost)
  redis.call('PEXPIREAT', KEYS[nw + i], expires_at_ms)
end
for i = 1, ns do
  redis.call('ZADD', KEYS[nw + nb + i], lease_until, slot_id)
  redis.call('PEXPIREAT', KEYS[nw + nb + i], slot_expires_at_ms)
end
return {'ok', 0, 0, {}, ''}
