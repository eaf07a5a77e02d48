-- Moves users of a custom-interval due index to their next fire, each only
-- if its stored fire is still the one the caller handled (a user who changed
-- their interval meanwhile is left alone), and only if the caller still holds
-- the latest fence of the task's schedule lock.
--
-- KEYS[1]: {prefix}:index:custom:{task}, a ZSET user -> next fire (epoch ms)
-- KEYS[2]: {prefix}:schedule:lock:{task}:fence, the lock's fence counter
-- ARGV[1]: the caller's fence
-- ARGV[3i+2], ARGV[3i+3], ARGV[3i+4]: user id, fire handled (epoch ms),
--          next fire (epoch ms), for each move i
-- Returns: the number of users moved, or -1 when a later holder took the
--          lock (nothing written).
local fence = tonumber(redis.call('GET', KEYS[2]) or '0')
if fence ~= tonumber(ARGV[1]) then
    return -1
end
local moved = 0
for i = 2, #ARGV, 3 do
    local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
    if score and tonumber(score) == tonumber(ARGV[i + 1]) then
        redis.call('ZADD', KEYS[1], 'XX', ARGV[i + 2], ARGV[i])
        moved = moved + 1
    end
end
return moved
