-- Gives a lease back only while it is still ours (never deletes another holder's).
-- KEYS[1]: the lock key; ARGV[1]: our token. Returns 1 when released, 0 otherwise.
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
