-- A triggered run about to start. While the scope's lease is held by another run, the trigger is
-- parked: that run's holder sends one more run when it ends. Otherwise the trigger is consumed:
-- changes made from now on need another trigger, and get one.
-- KEYS[1]: the trigger key; KEYS[2]: the scope's lock key. ARGV[1]: the trigger key's TTL in ms.
-- Returns 'go' (run now) or 'parked'.
if redis.call('exists', KEYS[2]) == 1 then
  local now = redis.call('get', KEYS[1])
  if now == 'queued' or not now then
    -- 'queued' is this run's own mark (one run is ever queued per scope); nothing else is queued.
    redis.call('set', KEYS[1], 'parked', 'PX', ARGV[1])
  end
  return 'parked'
end
redis.call('del', KEYS[1])
return 'go'
