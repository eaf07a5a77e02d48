-- Claims the (task, user) run slot for a job: the overlap guard.
--
-- KEYS[1]: {prefix}:running:{task}:{user}, a STRING holding the job id
-- ARGV[1]: the job id
-- ARGV[2]: time to live of the claim in milliseconds
-- Returns: 1 when the job holds the slot (newly or already), 0 when another
--          job holds it.
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
    return 1
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return 1
end
return 0
