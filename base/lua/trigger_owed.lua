-- A run that held the scope's lease has ended (and released it). A trigger parked meanwhile is owed
-- one more run, unless a new holder took the lease since: that holder's end settles it instead.
-- KEYS[1]: the trigger key; KEYS[2]: the scope's lock key. ARGV[1]: the trigger key's TTL in ms.
-- Returns 1 when the caller must send the run (the key is then 'queued'), else 0.
if redis.call('exists', KEYS[2]) == 1 then
  return 0
end
if redis.call('get', KEYS[1]) == 'parked' then
  redis.call('set', KEYS[1], 'queued', 'PX', ARGV[1])
  return 1
end
return 0
