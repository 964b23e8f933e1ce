-- Raise a budget counter to at least ARGV[1]; expire it at ARGV[2] (unix ms). KEYS[1]: counter.
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > current then
  redis.call('SET', KEYS[1], ARGV[1])
end
redis.call('PEXPIREAT', KEYS[1], ARGV[2])
return 1
