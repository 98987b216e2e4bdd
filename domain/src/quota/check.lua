-- Atomic quota check / consume / record for one tenant resource, in one round trip.
-- Every key it touches arrives in KEYS, named by the engine (`quota::keys`); on a Redis Cluster
-- they all carry the tenant's hash tag, so they share one slot. __MAXLEN__, __GRACE__ and
-- __RELAY__ are filled in from the configuration when the script is loaded, so each call carries
-- only what varies.
--
-- KEYS[1]  the tenant's state hash: status, l:<resource> (limit), p:<resource> (reset period)
-- KEYS[2]  the counter: the gauge, or the counter of the current window of the period ARGV[6]
-- KEYS[3]  the thresholds already crossed by that counter (hash)
-- KEYS[4]  where threshold events go: the events stream itself, or (__RELAY__, when the counters
--          do not live on REDIS_URL) the tenant's list of events the engine relays to the stream
-- KEYS[5]  optional: the idempotency key of a consume or record; a repeat within 24 h counts
--          nothing and answers the first decision with the current figures
--
-- ARGV[1]  tenant id
-- ARGV[2]  resource
-- ARGV[3]  amount (integer; negative only when recording a gauge going down)
-- ARGV[4]  mode: "check" (decide only), "consume" (decide and count if allowed),
--          "record" (count unconditionally: usage that already happened), "lease" (consume, and
--          take budget for the process to serve later consumes from)
-- ARGV[5]  now, unix seconds (UTC)
-- ARGV[6]  the reset period KEYS[2] and KEYS[3] are named for ("none" for a gauge); if the state
--          says another, nothing is counted and the period is returned (code -4)
-- ARGV[7], ARGV[8]  start and end of that window (0 and 0 for a gauge)
-- ARGV[9], ARGV[10]  mode "lease" only: the budget wanted on top of the amount, and unused budget
--          of an earlier lease of this very counter to give back first (whatever the outcome)
--
-- Returns {"code limit used reset_at status crossed granted replayed", events}: the figures as
-- one line (one bulk string is far cheaper for the client to parse than eight replies; status and
-- crossed may be empty, never contain a space):
--   code 1 allowed, 0 denied, -1 no state for the tenant, -2 tenant not active (status), -3 no
--   limit, -4 another reset period (in status); events: the relayed events this call queued.
local function reply(code, limit, used, reset_at, status, crossed, granted, replayed, events)
  return {string.format('%d %d %d %d %s %s %d %d', code, limit, used, reset_at, status, crossed, granted, replayed),
          events}
end

-- Unix seconds as ISO-8601 UTC (days to civil date: H. Hinnant's algorithm).
local function iso(ts)
  local days = math.floor(ts / 86400)
  local secs = ts - days * 86400
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400 + (m <= 2 and 1 or 0)
  return string.format('%04d-%02d-%02dT%02d:%02d:%02dZ', y, m, d,
                       math.floor(secs / 3600), math.floor(secs % 3600 / 60), secs % 60)
end

local key = KEYS[2]
local res, amount, mode = ARGV[2], tonumber(ARGV[3]), ARGV[4]
local now = tonumber(ARGV[5])

-- Budget an earlier lease of this counter left unused goes back first, whatever follows: it was
-- taken from this very key, and the process no longer holds it.
if mode == 'lease' then
  local back = tonumber(ARGV[10]) or 0
  if back > 0 and redis.call('EXISTS', key) == 1 and redis.call('DECRBY', key, back) < 0 then
    redis.call('SET', key, 0, 'KEEPTTL')
  end
end

local state = redis.call('HMGET', KEYS[1], 'status', 'l:' .. res, 'p:' .. res)
local status, limit, period = state[1], state[2], state[3] or 'none'
if not status then return reply(-1, 0, 0, 0, '', '', 0, 0, {}) end
if status ~= 'active' then return reply(-2, 0, 0, 0, status, '', 0, 0, {}) end
if not limit then return reply(-3, 0, 0, 0, status, '', 0, 0, {}) end
if period ~= ARGV[6] then return reply(-4, 0, 0, 0, period, '', 0, 0, {}) end
limit = tonumber(limit)

local window, reset_at, ttl = 'gauge', 0, 0
local slot = period ~= 'none'
if slot then
  window, reset_at = ARGV[7], tonumber(ARGV[8])
  ttl = reset_at - now + __GRACE__
end

local idem = KEYS[5]
if idem and mode ~= 'check' then
  local prior = redis.call('GET', idem)
  if prior then
    return reply(tonumber(prior), limit, tonumber(redis.call('GET', key) or '0'), reset_at, status, '', 0, 1, {})
  end
else
  idem = nil
end

-- Consuming: count first, take it back if that went over (one write on the common path).
local used, after, allowed = 0, 0, 1
if mode == 'check' then
  used = tonumber(redis.call('GET', key) or '0')
  after = used
  if used + amount > limit then allowed = 0 end
else
  after = redis.call('INCRBY', key, ARGV[3])
  used = after - amount
  if mode ~= 'record' and after > limit then
    if used <= 0 then redis.call('DEL', key) else redis.call('DECRBY', key, ARGV[3]) end
    after = used
    allowed = 0
  elseif after < 0 then
    redis.call('SET', key, 0)
    after = 0
  end
  -- a fresh key (nothing counted before) gets its expiry
  if used <= 0 and ttl > 0 and after > 0 then redis.call('EXPIRE', key, ttl) end
end

-- A lease: budget counted up front (so no replica can overrun the limit with it), granted only
-- while usage stays under 70 % of the limit, so every threshold is crossed by an exact call.
local granted = 0
if mode == 'lease' and allowed == 1 then
  local chunk = tonumber(ARGV[9]) or 0
  if chunk > 0 and (after + chunk) * 100 < 70 * limit then
    redis.call('INCRBY', key, chunk)
    granted = chunk
  end
end

-- Thresholds: each fires once per window (decided here, so concurrency can't repeat or skip it).
local crossed, relayed = {}, {}
if after ~= used and limit > 0 and (after * 100 >= 75 * limit or used * 100 >= 75 * limit) then
  local flags = KEYS[3]
  for _, t in ipairs({75, 90, 95}) do
    local was, is = used * 100 >= t * limit, after * 100 >= t * limit
    if is and not was then
      if redis.call('HSETNX', flags, t, now) == 1 then
        if ttl > 0 then redis.call('EXPIRE', flags, ttl) end
        table.insert(crossed, t)
        local tenant = ARGV[1]
        local id = 'quota:' .. tenant .. ':' .. res .. ':' .. window .. ':' .. t
        local data = cjson.encode({resource = res, threshold = t, used = after, limit = limit,
                                   window = window, resetAt = reset_at})
        if __RELAY__ then
          local event = cjson.encode({id = id, type = 'quota.threshold_crossed', tenantId = tenant,
                                      occurredAt = iso(now), data = data, at = now})
          redis.call('RPUSH', KEYS[4], event)
          table.insert(relayed, event)
        else
          redis.call('XADD', KEYS[4], 'MAXLEN', '~', '__MAXLEN__', '*', 'id', id, 'type',
                     'quota.threshold_crossed', 'tenantId', tenant, 'occurredAt', iso(now), 'data', data)
        end
      end
    elseif was and not is and not slot then
      -- a gauge went back below the threshold: it may fire again
      redis.call('HDEL', flags, t)
    end
  end
end
if idem then redis.call('SET', idem, allowed, 'EX', 86400) end
return reply(allowed, limit, after, reset_at, status, table.concat(crossed, ','), granted, 0, relayed)
