-- A counted waiter leaves without the lock (its deadline passed, it failed, it was dropped).
-- KEYS[1] lock key, KEYS[2] the lock's "wanted" mark (its value counts the waiters).
-- The count goes down by one (the mark goes at zero); with no waiter left, a reservation for
-- waiters (release.lua) is given up at once, so the lock is free for anyone.
local n = tonumber(redis.call('GET', KEYS[2]))
local left = redis.call('PTTL', KEYS[2])
if n and n > 1 and left > 0 then
  redis.call('SET', KEYS[2], n - 1, 'PX', left)
  return 0
end
redis.call('DEL', KEYS[2])
if redis.call('GET', KEYS[1]) == 'handoff' then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
