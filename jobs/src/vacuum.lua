-- Removes finished deliveries from an apalis-redis queue: the members of its done and dead sets
-- finished before the cutoff, with their data-hash entry and their metadata key. (apalis's own
-- vacuum leaves the set members behind, so the sets would grow forever.)
-- KEYS[1] data hash, KEYS[2] metadata prefix, KEYS[3] done set, KEYS[4] dead set
-- ARGV[1] age in seconds a finished delivery is kept
local cutoff = tonumber(redis.call('TIME')[1]) - tonumber(ARGV[1])
local removed = 0
for _, set in ipairs({KEYS[3], KEYS[4]}) do
  for _, id in ipairs(redis.call('SMEMBERS', set)) do
    local meta = KEYS[2] .. ':' .. id
    local done_at = tonumber(redis.call('HGET', meta, 'done_at') or '0') or 0
    if done_at <= cutoff then
      redis.call('HDEL', KEYS[1], id)
      redis.call('DEL', meta)
      redis.call('SREM', set, id)
      removed = removed + 1
    end
  end
end
return removed
