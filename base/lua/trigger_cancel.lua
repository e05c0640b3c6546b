-- The run a request queued could not be sent (the broker refused it): the mark goes, so the next
-- request tries again instead of joining a run that will never come.
-- KEYS[1]: the trigger key. Returns 1 when the mark was removed.
if redis.call('get', KEYS[1]) == 'queued' then
  return redis.call('del', KEYS[1])
end
return 0
