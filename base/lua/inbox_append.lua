-- Queues each WhatsApp message whose wamid was never queued, atomically with its seen-key, and
-- counts queued and duplicate deliveries. Returns the new stream entry ids.
-- KEYS[1]: the stream; KEYS[2]: the metrics counters hash; KEYS[3..n]: each message's seen-key.
-- ARGV[1]: seen-key TTL (s); ARGV[2], ARGV[3]: the queued and the duplicate counter fields;
-- ARGV[4]: the field names (JSON array); ARGV[5..]: each message's values (JSON array, same order).
-- One JSON argument per message rather than one per field: argument encoding is the client's
-- largest cost on this path.
local names = cjson.decode(ARGV[4])
local entry, added = {}, {}
for i = 3, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 0 then
    local values = cjson.decode(ARGV[i + 2])
    for j = 1, #names do
      entry[2 * j - 1] = names[j]
      entry[2 * j] = values[j]
    end
    local id = redis.call('XADD', KEYS[1], '*', unpack(entry))
    redis.call('SET', KEYS[i], id, 'EX', ARGV[1])
    added[#added + 1] = id
  end
end
if #added > 0 then redis.call('HINCRBYFLOAT', KEYS[2], ARGV[2], #added) end
local repeated = #KEYS - 2 - #added
if repeated > 0 then redis.call('HINCRBYFLOAT', KEYS[2], ARGV[3], repeated) end
return added
