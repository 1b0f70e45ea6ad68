-- Frees the lock whoever holds it (an administrator's action) and wakes waiters.
-- KEYS[1] lock key; ARGV[1] the lock's notification channel, ARGV[2] the publish command
-- ('SPUBLISH' on a cluster, else 'PUBLISH', also when missing).
-- Returns 1 if it was held, 0 if it was free. The fence counter is left alone.
if redis.call('DEL', KEYS[1]) == 1 then
  redis.call(ARGV[2] == 'SPUBLISH' and 'SPUBLISH' or 'PUBLISH', ARGV[1], '')
  return 1
end
return 0
