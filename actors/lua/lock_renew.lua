-- Extends a lock, only for its current holder.
--
-- KEYS[1]: the lock (STRING holding the holder's token)
-- ARGV[1]: the caller's token
-- ARGV[2]: new time to live in milliseconds
-- Returns: 1 when extended, 0 when the caller no longer holds the lock.
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
