-- Every operation of a read/write lock, atomically: ARGV[1] names it.
-- KEYS[1] readers (sorted set: token scored by its end, server ms), KEYS[2] writer (string:
-- token, PX ttl), KEYS[3] waiting writers' marks (sorted set: mark scored by its end), KEYS[4]
-- fence counter (no ttl); all under the lock's hash tag. The channel and the publish command
-- ('PUBLISH', or 'SPUBLISH' on a cluster) come last in ARGV.
--
-- read    ARGV token, ttl ms                      -> {1, fence} | {0, ms until a change}
-- write   ARGV token, ttl ms, mark ('' for none),
--         mark ms                                 -> {1, fence} | {0, ms until a change}
-- extend  ARGV kind ('read'|'write'), token, ttl  -> 1 | 0
-- release ARGV kind, token, channel, publish      -> 1 | 0
-- leave   ARGV mark, channel, publish             -> 1 | 0
-- status  (read-only)                             -> {fence | -1, holders, 1 if a writer,
--                                                     ms left on the last to end | -2}
--
-- An acquire whose token holds already was sent twice (a client resend): an error, so the
-- caller's cleanup releases that token and nothing lingers.
if redis.replicate_commands then
  redis.replicate_commands()
end
local op = ARGV[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

-- A sorted set lives as long as its last member.
local function keep(set)
  local last = redis.call('ZRANGE', set, -1, -1, 'WITHSCORES')
  if #last > 0 then
    redis.call('PEXPIREAT', set, math.floor(tonumber(last[2])) + 1)
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

local function prune()
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
end

local function publish(channel, command)
  redis.call(command == 'SPUBLISH' and 'SPUBLISH' or 'PUBLISH', channel, '')
end

-- fence = max(counter + 1, server clock in microseconds), as for the mutex (acquire.lua).
local function fence()
  local floor = t[1] .. string.rep('0', 6 - #t[2]) .. t[2]
  local f = redis.call('INCR', KEYS[4])
  if f >= 9007199254740992 then
    return redis.error_reply('ERR leasehold fence counter past 2^53: increment or decrement would overflow')
  end
  if f < tonumber(floor) then
    redis.call('SET', KEYS[4], floor)
    return {1, tonumber(floor)}
  end
  return {1, f}
end

local function resent()
  return redis.error_reply('ERR leasehold acquire sent twice: the token holds already')
end

if op == 'read' then
  prune()
  if redis.call('ZSCORE', KEYS[1], ARGV[2]) then
    return resent()
  end
  local writer = redis.call('PTTL', KEYS[2])
  if writer ~= -2 then
    return {0, writer}
  end
  local mark = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
  if #mark > 0 then
    return {0, math.floor(tonumber(mark[2])) - now}
  end
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
  keep(KEYS[1])
  return fence()
elseif op == 'write' then
  prune()
  if redis.call('GET', KEYS[2]) == ARGV[2] then
    return resent()
  end
  local busy = redis.call('PTTL', KEYS[2])
  if busy == -2 and redis.call('ZCARD', KEYS[1]) > 0 then
    local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
    busy = math.floor(tonumber(last[2])) - now
  end
  if busy ~= -2 then
    if ARGV[4] ~= '' then
      redis.call('ZADD', KEYS[3], now + tonumber(ARGV[5]), ARGV[4])
      keep(KEYS[3])
    end
    return {0, busy}
  end
  redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
  if ARGV[4] ~= '' then
    redis.call('ZREM', KEYS[3], ARGV[4])
  end
  return fence()
elseif op == 'extend' then
  if ARGV[2] == 'read' then
    local ends = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[3]))
    if not ends or ends <= now then
      return 0
    end
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[4]), ARGV[3])
    keep(KEYS[1])
    return 1
  end
  if redis.call('GET', KEYS[2]) == ARGV[3] then
    redis.call('PEXPIRE', KEYS[2], ARGV[4])
    return 1
  end
  return 0
elseif op == 'release' then
  -- Pruned first: readers that expired unnoticed must not keep the set from looking empty
  -- (the waiting writer would miss the last release's message).
  prune()
  if ARGV[2] == 'read' then
    local ends = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[3]))
    if not ends then
      return 0
    end
    redis.call('ZREM', KEYS[1], ARGV[3])
    if redis.call('ZCARD', KEYS[1]) == 0 then
      publish(ARGV[4], ARGV[5])
    end
    return ends > now and 1 or 0
  end
  if redis.call('GET', KEYS[2]) == ARGV[3] then
    redis.call('DEL', KEYS[2])
    publish(ARGV[4], ARGV[5])
    return 1
  end
  return 0
elseif op == 'leave' then
  if redis.call('ZREM', KEYS[3], ARGV[2]) == 1 then
    publish(ARGV[3], ARGV[4])
    return 1
  end
  return 0
elseif op == 'status' then
  local fence = tonumber(redis.call('GET', KEYS[4]) or '-1')
  local writer = redis.call('PTTL', KEYS[2])
  if writer ~= -2 then
    return {fence, 1, 1, writer}
  end
  local readers, last = live(KEYS[1])
  if readers == 0 then
    return {fence, 0, 0, -2}
  end
  return {fence, readers, 0, last - now}
end
return redis.error_reply('ERR leasehold rw.lua: unknown operation')
