-- Extends the lock only while ARGV[1] (the token) still holds it; never re-creates it.
-- KEYS[1] lock key; ARGV[1] token, ARGV[2] ttl in ms. Returns 1 if extended, 0 if not held.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
