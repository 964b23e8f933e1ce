-- Extend the lease of a slot still held by a live request. KEYS: slot keys.
-- ARGV: slot_id, lease_until, slot_expires_at_ms.
for i = 1, #KEYS do
  redis.call('ZADD', KEYS[i], 'XX', ARGV[2], ARGV[1])
  redis.call('PEXPIREAT', KEYS[i], ARGV[3])
end
return 1
