-- Moves a shared pause later, never earlier: two workers told different Retry-After values keep
-- the longer one. KEYS[1]: the throttle key; ARGV[1]: Unix time the pause ends;
-- ARGV[2]: the key's TTL in milliseconds. Returns 1 when the pause was moved, 0 otherwise.
local cur = tonumber(redis.call('get', KEYS[1]) or '0')
local new = tonumber(ARGV[1])
if new > cur then
  redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
