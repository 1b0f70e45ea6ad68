-- Frees the lock only while ARGV[1] (the token) holds it. If waiters are counted in its mark, it
-- is handed to them instead: reserved as 'handoff' for ARGV[3] ms, which only a caller that
-- has already waited can take (acquire.lua), and a message wakes them; so a newcomer, or the
-- releaser asking again at once, does not cut in before the waiters. A release nobody waits
-- for sends no message, and one that nobody hears reserves nothing.
-- KEYS[1] lock key, KEYS[2] the lock's "wanted" mark; ARGV[1] token, ARGV[2] the lock's
-- notification channel, ARGV[3] the hand-off reservation in ms (0 or missing: none), ARGV[4]
-- the publish command: 'SPUBLISH' on a cluster (the channel shares the lock's slot), else
-- 'PUBLISH' (also when missing).
-- Returns 1 if released, 2 if released and reserved for waiters, 0 if it was not held by this
-- token (expired or someone else's).
if redis.call('GET', KEYS[1]) == ARGV[1] then
  -- GET, not EXISTS: the ACL of earlier versions grants it (no new permission to roll out).
  -- The mark's value counts the waiters (an earlier version's mark is '1').
  local waiters = redis.call('GET', KEYS[2])
  if waiters then
    local heard = redis.call(ARGV[4] == 'SPUBLISH' and 'SPUBLISH' or 'PUBLISH', ARGV[2], '')
    local reserve = tonumber(ARGV[3]) or 0
    -- Reserved only if someone heard the message: waiters whose subscriptions are gone (a
    -- failover moved the lock to a node they are not subscribed on yet) would not come.
    if reserve > 0 and (tonumber(waiters) or 0) > 0 and heard > 0 then
      redis.call('SET', KEYS[1], 'handoff', 'PX', reserve)
      return 2
    end
  end
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
