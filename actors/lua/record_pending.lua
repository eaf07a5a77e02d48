-- Records a queued job as `pending`, unless an attempt of it has started:
-- the `running` or final record of a job published again (a crash between
-- a slot's publish and its trim) is kept as it is.
--
-- KEYS[1]: {prefix}:job:{job id}:result, the job's results (HASH record,
--          finished, pending)
-- ARGV[1]: the `pending` record (JSON)
-- ARGV[2]: time to live of the result records in milliseconds, set only
--          when the key has none yet
-- Returns: 1 when recorded, 0 when the job has started already.
if redis.call('HEXISTS', KEYS[1], 'record') == 1 then
    return 0
end
redis.call('HSET', KEYS[1], 'pending', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2], 'NX')
return 1
