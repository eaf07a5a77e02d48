-- Deletes a key only if it still holds the caller's value: releases a lock
-- (or a run claim) without ever freeing someone else's.
--
-- KEYS[1]: the lock or claim (STRING)
-- ARGV[1]: the value the caller set (its token or job id)
-- Returns: 1 when deleted, 0 when the key holds something else or nothing.
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
