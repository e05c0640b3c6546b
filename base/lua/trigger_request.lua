-- Asks for one run of a scope: queues one unless one is already due (queued or parked).
-- KEYS[1]: the scope's trigger key; KEYS[2]: the metrics counters hash.
-- ARGV[1]: the key's TTL in ms; ARGV[2]: counter field "sent"; ARGV[3]: counter field "coalesced".
-- Returns 1 when the caller must send the run, 0 when the request joined a run already due.
if redis.call('set', KEYS[1], 'queued', 'NX', 'PX', ARGV[1]) then
  redis.call('hincrbyfloat', KEYS[2], ARGV[2], 1)
  return 1
end
redis.call('hincrbyfloat', KEYS[2], ARGV[3], 1)
return 0
