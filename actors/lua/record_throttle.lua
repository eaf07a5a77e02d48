-- Records a throttle of one job (the endpoint answered 429 or 503 with
-- `Retry-After`): counts it against the job's throttle budget and pauses
-- the job's task for every replica (a longer pause already set is kept).
--
-- KEYS[1]: {prefix}:job:{job id}:throttles, the job's throttle count (STRING)
-- KEYS[2]: {prefix}:pause:{task}, the task's pause (STRING, expiring when
--          the pause ends)
-- ARGV[1]: time to live of the count in milliseconds (>= 1)
-- ARGV[2]: the pause in milliseconds; 0 sets no pause
-- Returns: the job's throttles so far, this one included.
local count = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
local pause = tonumber(ARGV[2])
if pause > 0 and redis.call('PTTL', KEYS[2]) < pause then
    redis.call('SET', KEYS[2], 1, 'PX', pause)
end
return count
