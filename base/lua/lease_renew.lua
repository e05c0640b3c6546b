-- Renews a lease only while it is still ours.
-- KEYS[1]: the lock key; ARGV[1]: our token; ARGV[2]: the TTL in milliseconds.
-- Returns 1 when renewed, 0 when the lease expired or belongs to another holder.
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
