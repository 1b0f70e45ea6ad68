-- Takes the lock if it is free and hands out the next fence, atomically.
-- KEYS[1] lock key, KEYS[2] fence counter (same hash slot); ARGV[1] token, ARGV[2] ttl in ms.
-- Returns {1, fence} when taken, {0, holder's PTTL in ms} when someone else holds it.
-- The fence counter has no ttl and only ever grows, so fences strictly increase per key for
-- as long as Redis keeps its data (see the README on persistence).
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {1, redis.call('INCR', KEYS[2])}
end
return {0, redis.call('PTTL', KEYS[1])}
