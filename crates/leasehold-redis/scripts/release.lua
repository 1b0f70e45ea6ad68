-- Deletes the lock only while ARGV[1] (the token) holds it, and wakes waiters.
-- KEYS[1] lock key; ARGV[1] token, ARGV[2] the lock's notification channel.
-- Returns 1 if released, 0 if it was not held by this token (expired or someone else's).
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[2], '')
  return 1
end
return 0
