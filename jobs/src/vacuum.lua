-- Removes finished deliveries from an apalis-redis queue, for one batch of ids that the caller
-- read from the done or dead set with SSCAN (so no call walks a whole set and Redis is never
-- blocked for long): each id whose delivery finished before the cutoff loses its data-hash entry,
-- its metadata key and its set member. (apalis's own vacuum leaves the set members behind, so
-- the sets would grow forever.)
-- KEYS[1] data hash, KEYS[2] metadata prefix, KEYS[3] the set
-- ARGV[1] age in seconds a finished delivery is kept, ARGV[2..] ids
local cutoff = tonumber(redis.call('TIME')[1]) - tonumber(ARGV[1])
local removed = 0
for i = 2, #ARGV do
  local id = ARGV[i]
  local meta = KEYS[2] .. ':' .. id
  local done_at = tonumber(redis.call('HGET', meta, 'done_at') or '0') or 0
  if done_at <= cutoff then
    redis.call('HDEL', KEYS[1], id)
    redis.call('DEL', meta)
    redis.call('SREM', KEYS[3], id)
    removed = removed + 1
  end
end
return removed
