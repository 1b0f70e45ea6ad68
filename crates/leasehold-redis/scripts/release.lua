-- Deletes the lock only while ARGV[1] (the token) holds it, and wakes waiters if any marked
-- it as wanted (a release nobody waits for sends no message).
-- KEYS[1] lock key, KEYS[2] the lock's "wanted" mark; ARGV[1] token, ARGV[2] the lock's
-- notification channel.
-- Returns 1 if released, 0 if it was not held by this token (expired or someone else's).
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  -- GET, not EXISTS: the ACL of earlier versions grants it (no new permission to roll out).
  if redis.call('GET', KEYS[2]) then
    redis.call('PUBLISH', ARGV[2], '')
  end
  return 1
end
return 0
