-- Moves users of a custom-interval due index to their next fire, each only
-- if its stored fire is still the one the caller handled (a user who changed
-- their interval meanwhile is left alone).
--
-- KEYS[1]: {prefix}:index:custom:{task}, a ZSET user -> next fire (epoch ms)
-- ARGV[3i+1], ARGV[3i+2], ARGV[3i+3]: user id, fire handled (epoch ms),
--          next fire (epoch ms), for each move i
-- Returns: the number of users moved.
local moved = 0
for i = 1, #ARGV, 3 do
    local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
    if score and tonumber(score) == tonumber(ARGV[i + 1]) then
        redis.call('ZADD', KEYS[1], 'XX', ARGV[i + 2], ARGV[i])
        moved = moved + 1
    end
end
return moved
