-- Takes a lock if it is free and hands out the next fencing token.
--
-- KEYS[1]: the lock, a STRING holding the holder's random token
--          ({prefix}:schedule:lock:{task} or {prefix}:distribution:lock)
-- KEYS[2]: the lock's fence counter ({lock key}:fence)
-- ARGV[1]: the new holder's random token
-- ARGV[2]: time to live in milliseconds
-- Returns: the fence (an integer greater than every earlier one) when the
--          lock was taken, nil when another holder has it.
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
    return redis.call('INCR', KEYS[2])
end
return false
