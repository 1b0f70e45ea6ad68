-- Every operation of a semaphore, atomically: ARGV[1] names it.
-- KEYS[1] holders (sorted set: token scored by its end, server ms), KEYS[2] the limit the
-- holders were granted under, KEYS[3] fence counter (no ttl); all under the lock's hash tag.
--
-- acquire ARGV token, ttl ms, max holders   -> {1, fence} | {0, ms until the first permit
--                                              ends} | {2, stored limit} (another limit)
-- extend  ARGV token, ttl ms                -> 1 | 0
-- release ARGV token, channel, publish      -> 1 | 0
-- status  (read-only)                       -> {fence | -1, holders, ms left on the last to
--                                              end | -2, stored limit | -1}
--
-- The cost grows with the holders (a sorted set), not with the limit. An acquire whose token
-- holds already was sent twice (a client resend): an error, so the caller's cleanup releases
-- that token.
if redis.replicate_commands then
  redis.replicate_commands()
end
local op = ARGV[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

-- The holders and the limit live as long as the last permit.
local function keep()
  local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
  if #last > 0 then
    local at = math.floor(tonumber(last[2])) + 1
    redis.call('PEXPIREAT', KEYS[1], at)
    redis.call('PEXPIREAT', KEYS[2], at)
  end
end

-- The members of a sorted set that end after now, and the latest end (read-only: one ZRANGE,
-- so the documented ACL suffices; it grows with the holders, as every operation does).
local function live(set)
  local all = redis.call('ZRANGE', set, 0, -1, 'WITHSCORES')
  local n, last = 0, 0
  for i = 2, #all, 2 do
    local ends = math.floor(tonumber(all[i]))
    if ends > now then
      n = n + 1
      if ends > last then
        last = ends
      end
    end
  end
  return n, last
end

if op == 'acquire' then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  if redis.call('ZSCORE', KEYS[1], ARGV[2]) then
    return redis.error_reply('ERR leasehold acquire sent twice: the token holds already')
  end
  local held = redis.call('ZCARD', KEYS[1])
  local max = tonumber(ARGV[4])
  if held > 0 then
    local stored = tonumber(redis.call('GET', KEYS[2]))
    if stored and stored ~= max then
      return {2, stored}
    end
  end
  if held >= max then
    local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    return {0, math.floor(tonumber(first[2])) - now}
  end
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
  redis.call('SET', KEYS[2], ARGV[4])
  keep()
  -- fence = max(counter + 1, server clock in microseconds), as for the mutex (acquire.lua).
  local floor = t[1] .. string.rep('0', 6 - #t[2]) .. t[2]
  local f = redis.call('INCR', KEYS[3])
  if f >= 9007199254740992 then
    return redis.error_reply('ERR leasehold fence counter past 2^53: increment or decrement would overflow')
  end
  if f < tonumber(floor) then
    redis.call('SET', KEYS[3], floor)
    return {1, tonumber(floor)}
  end
  return {1, f}
elseif op == 'extend' then
  local ends = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[2]))
  if not ends or ends <= now then
    return 0
  end
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
  keep()
  return 1
elseif op == 'release' then
  local ends = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[2]))
  if not ends then
    return 0
  end
  redis.call('ZREM', KEYS[1], ARGV[2])
  redis.call(ARGV[4] == 'SPUBLISH' and 'SPUBLISH' or 'PUBLISH', ARGV[3], '')
  return ends > now and 1 or 0
elseif op == 'status' then
  local fence = tonumber(redis.call('GET', KEYS[3]) or '-1')
  local held, last = live(KEYS[1])
  if held == 0 then
    return {fence, 0, -2, -1}
  end
  local limit = tonumber(redis.call('GET', KEYS[2]) or '-1')
  return {fence, held, last - now, limit}
end
return redis.error_reply('ERR leasehold semaphore.lua: unknown operation')
