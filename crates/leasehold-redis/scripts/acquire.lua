-- Takes the lock if it is free and hands out the next fence, atomically.
-- KEYS[1] lock key, KEYS[2] fence counter, KEYS[3] the lock's "wanted" mark (same hash slot);
-- ARGV[1] token, ARGV[2] ttl in ms, ARGV[3] how long a waiting caller's mark lasts, in ms (0:
-- the caller does not wait, or nobody would hear a release), ARGV[4] '1' when the caller is
-- counted in the mark already, ARGV[5] '1' when it has waited (slept since it was refused).
-- Returns {1, fence} when taken (or held by this token already), {0, PTTL in ms} when someone
-- else holds it or it is reserved for the waiters before this caller.
--
-- fence = max(counter + 1, server clock in microseconds). The counter has no ttl and only ever
-- grows; the clock floor keeps fences above every fence handed out before when the counter is
-- lost (restart without persistence) or rolled back (an older snapshot, a lagging replica), as
-- long as the server clock then reads later than it did at the last acquisition. Microseconds
-- since 1970 are about 1.8e15: exact in Lua's doubles (below 2^53) and in i64.
-- TIME runs first, so a refused TIME (an ACL without +time) fails before anything is written.
-- Writing after TIME needs effects replication: the default since Redis 5, switched on here
-- for servers configured otherwise (a no-op on Redis 7).
if redis.replicate_commands then
  redis.replicate_commands()
end
local now = redis.call('TIME')
local floor = now[1] .. string.rep('0', 6 - #now[2]) .. now[2]
local counted = ARGV[4] == '1'

-- The mark counts the waiters (its value) and lasts ARGV[3] ms from the last renewal. One
-- waiter fewer: the count goes down, the mark goes at zero.
local function leave()
  local n = tonumber(redis.call('GET', KEYS[3]))
  local left = redis.call('PTTL', KEYS[3])
  if n and n > 1 and left > 0 then
    redis.call('SET', KEYS[3], n - 1, 'PX', left)
  else
    redis.call('DEL', KEYS[3])
  end
end

local function won()
  if counted then
    leave()
  end
  local fence = redis.call('INCR', KEYS[2])
  if fence >= 9007199254740992 then
    -- Not exact as a Lua number any more (set by hand: clock fences reach 2^53 in 2255).
    return redis.error_reply('ERR leasehold fence counter past 2^53: increment or decrement would overflow')
  end
  if fence < tonumber(floor) then
    redis.call('SET', KEYS[2], floor)
    return {1, tonumber(floor)}
  end
  return {1, fence}
end

if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return won()
end
local holder = redis.call('GET', KEYS[1])
-- This token holds the lock already: the script ran before and this is the same attempt sent
-- again (the cluster client resends after a dropped connection). Its answer again: the fence
-- counter holds that acquisition's fence, since nobody acquired since.
if holder == ARGV[1] then
  local raw = redis.call('GET', KEYS[2])
  local fence = tonumber(raw)
  if fence then
    if fence >= 9007199254740992 then
      return redis.error_reply('ERR leasehold fence counter past 2^53: increment or decrement would overflow')
    end
    -- Written again, unchanged, so that this run is in the replication stream: a WAIT after
    -- it on the new connection then covers the first run's writes too (the stream is in
    -- order), as `wait_for_replicas` needs. (Redis 7.0.15 made a fresh connection that wrote
    -- nothing wait for the current offset anyway, measured; this does not rely on that.)
    redis.call('SET', KEYS[2], raw)
    return {1, fence}
  end
  -- The counter is gone (deleted by hand) but the lock is not: a new fence, as for a win
  -- (the first run took this caller out of the mark already).
  counted = false
  return won()
end
-- A release that found waiters left the lock reserved for them ('handoff', for a few ms; see
-- release.lua): a caller that has waited takes it, a newcomer does not cut in.
if ARGV[5] == '1' and holder == 'handoff' then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return won()
end
-- Busy: a waiter counts itself in the mark in the same script that found the lock held, so
-- the release that frees it sees the mark; a release before this script ran left the lock
-- free for it instead. A counted waiter renews the mark once half of it is used up (a write,
-- so not on every attempt), and counts itself again if the mark is gone.
local wanted_ms = tonumber(ARGV[3]) or 0
if wanted_ms <= 0 then
  return {0, redis.call('PTTL', KEYS[1])}
end
if not counted then
  redis.call('INCR', KEYS[3])
  redis.call('PEXPIRE', KEYS[3], wanted_ms)
else
  -- A mark that is gone (expired, or lost with a restart) is made again with this waiter in
  -- it; the others still waiting are then not counted, which costs them their wake-ups (they
  -- poll) until they leave, never a release that reserves the lock for nobody.
  local left = redis.call('PTTL', KEYS[3])
  if left == -2 then
    redis.call('SET', KEYS[3], '1', 'PX', wanted_ms)
  elseif left < wanted_ms / 2 then
    redis.call('PEXPIRE', KEYS[3], wanted_ms)
  end
end
return {0, redis.call('PTTL', KEYS[1])}
