-- Gives leased budget a process no longer holds back to the counter it was taken from.
-- KEYS[1] the counter (of the lease's window); ARGV[1] the unused budget.
-- A counter Redis no longer has (its window expired, or Redis lost it) is left alone; a counter
-- never goes below zero. Returns the counter's new value, or -1 when it is gone.
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local left = redis.call('DECRBY', KEYS[1], ARGV[1])
if left < 0 then
  redis.call('SET', KEYS[1], 0, 'KEEPTTL')
  left = 0
end
return left
