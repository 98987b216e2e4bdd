-- Atomic quota check / consume / record for one tenant resource, in one round trip.
-- Keys are built here from the tenant's key base (single-node Redis; not cluster-safe).
--
-- ARGV[1]  key base of the tenant, e.g. "tenant:t:<uuid>:"
-- ARGV[2]  resource
-- ARGV[3]  amount (integer; negative only when recording a gauge going down)
-- ARGV[4]  mode: "check" (decide only), "consume" (decide and count if allowed),
--          "record" (count unconditionally: usage that already happened)
-- ARGV[5]  now, unix seconds
-- ARGV[6..15] start/end of the current minute, hour, day, week and month windows
-- ARGV[16] events stream, ARGV[17] tenant id, ARGV[18] stream max length,
-- ARGV[19] seconds a window's keys outlive the window (for rollups), ARGV[20] now as ISO-8601
--
-- State hash "<base>state": status, l:<resource> (limit), p:<resource> (reset period).
-- Returns {code, limit, used, reset_at, status, crossed}:
--   code 1 allowed, 0 denied, -1 no state for the tenant, -2 tenant not active, -3 no limit.
local base, res, amount, mode = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local now = tonumber(ARGV[5])
local state = redis.call('HMGET', base .. 'state', 'status', 'l:' .. res, 'p:' .. res)
local status, limit, period = state[1], state[2], state[3]
if not status then return {-1, 0, 0, 0, '', ''} end
if status ~= 'active' then return {-2, 0, 0, 0, status, ''} end
if not limit then return {-3, 0, 0, 0, status, ''} end
limit = tonumber(limit)

local slot = ({minute = 0, hourly = 1, daily = 2, weekly = 3, monthly = 4})[period]
local key, window, reset_at, ttl = base .. 'u:' .. res, 'gauge', 0, 0
if slot then
  window = ARGV[6 + slot * 2]
  reset_at = tonumber(ARGV[7 + slot * 2])
  key = key .. ':' .. window
  ttl = reset_at - now + tonumber(ARGV[19])
end

local used = tonumber(redis.call('GET', key) or '0')
local allowed = 1
if mode ~= 'record' and used + amount > limit then allowed = 0 end
local after = used
if mode == 'record' or (mode == 'consume' and allowed == 1) then
  after = redis.call('INCRBY', key, ARGV[3])
  if after < 0 then
    redis.call('SET', key, 0)
    after = 0
  end
  if ttl > 0 then redis.call('EXPIRE', key, ttl) end
end

-- Thresholds: each fires once per window (decided here, so concurrency can't repeat or skip it).
local crossed = {}
if after ~= used and limit > 0 then
  local flags = key .. ':th'
  for _, t in ipairs({75, 90, 95}) do
    local was, is = used * 100 >= t * limit, after * 100 >= t * limit
    if is and not was then
      if redis.call('HSETNX', flags, t, now) == 1 then
        table.insert(crossed, t)
        local id = 'quota:' .. ARGV[17] .. ':' .. res .. ':' .. window .. ':' .. t
        local data = cjson.encode({resource = res, threshold = t, used = after, limit = limit,
                                   window = window, resetAt = reset_at})
        redis.call('XADD', ARGV[16], 'MAXLEN', '~', ARGV[18], '*', 'id', id,
                   'type', 'quota.threshold_crossed', 'tenantId', ARGV[17], 'occurredAt', ARGV[20], 'data', data)
      end
    elseif was and not is and not slot then
      -- a gauge went back below the threshold: it may fire again
      redis.call('HDEL', flags, t)
    end
  end
  if ttl > 0 then redis.call('EXPIRE', flags, ttl) end
end
return {allowed, limit, after, reset_at, status, table.concat(crossed, ',')}
