-- Records the end of one execution of a job: sets the success marker when
-- the job succeeded, records the next try it published (retry or throttle)
-- and the attempt's result, and releases the execution claim and the run claim,
-- each only if this execution still holds it (compare-and-delete).
--
-- KEYS[1]: {prefix}:job:{job id}:done, the success marker (STRING)
-- KEYS[2]: {prefix}:running:{task}:job.{job id}, the execution claim (STRING)
-- KEYS[3]: {prefix}:running:{task}:{user}, the run claim (STRING)
-- KEYS[4]: {prefix}:job:{job id}:next, the job's next try (HASH attempt,
--          eligible)
-- KEYS[5]: {prefix}:job:{job id}:result, the job's latest result (HASH
--          record, finished)
-- KEYS[6]: {prefix}:job:{job id}:attempts, its finished attempts (LIST,
--          oldest first)
-- KEYS[7]: {prefix}:schedule:period:{task}:{ms}, the tally of the job's
--          period (HASH succeeded, failed, late:{bucket})
-- ARGV[1]: time to live of the success marker in milliseconds; 0 when the
--          job did not succeed (no marker is written)
-- ARGV[2]: the execution id (holder of the execution claim)
-- ARGV[3]: the job id (holder of the run claim); empty when the execution
--          took no run claim (the run claim is not touched)
-- ARGV[4]: the attempt of the next try this execution published; 0 for
--          none (the next try is not touched)
-- ARGV[5]: the next try's execute_after, epoch milliseconds
-- ARGV[6]: time to live of the next try in milliseconds
-- ARGV[7]: the attempt's outcome (JSON), recorded as the job's latest
--          result and appended to its attempts when this execution still
--          holds the execution claim and has not recorded it already;
--          empty to record none
-- ARGV[8]: time to live of the result records in milliseconds
-- ARGV[9]: most attempts kept in KEYS[6]
-- ARGV[10]: the tally field this finish adds one to (`succeeded` or
--          `failed`), counted with the result; empty for none
-- ARGV[11]: the lateness bucket of a first attempt (`late:{n}`), counted
--          with the result; empty for none
-- Returns: the number of claims released (0 to 2).
if tonumber(ARGV[1]) > 0 then
    redis.call('SET', KEYS[1], 1, 'PX', ARGV[1])
end
if tonumber(ARGV[4]) > 0 then
    redis.call('HSET', KEYS[4], 'attempt', ARGV[4], 'eligible', ARGV[5])
    redis.call('PEXPIRE', KEYS[4], ARGV[6])
end
if ARGV[7] ~= '' and redis.call('GET', KEYS[2]) == ARGV[2]
    and redis.call('HGET', KEYS[5], 'finished') ~= ARGV[2] then
    redis.call('HSET', KEYS[5], 'record', ARGV[7], 'finished', ARGV[2])
    redis.call('PEXPIRE', KEYS[5], ARGV[8])
    redis.call('RPUSH', KEYS[6], ARGV[7])
    redis.call('LTRIM', KEYS[6], -tonumber(ARGV[9]), -1)
    redis.call('PEXPIRE', KEYS[6], ARGV[8])
    if ARGV[10] ~= '' then
        redis.call('HINCRBY', KEYS[7], ARGV[10], 1)
    end
    if ARGV[11] ~= '' then
        redis.call('HINCRBY', KEYS[7], ARGV[11], 1)
    end
    if ARGV[10] ~= '' or ARGV[11] ~= '' then
        redis.call('PEXPIRE', KEYS[7], ARGV[8])
    end
end
local released = 0
if redis.call('GET', KEYS[2]) == ARGV[2] then
    released = released + redis.call('DEL', KEYS[2])
end
if ARGV[3] ~= '' and redis.call('GET', KEYS[3]) == ARGV[3] then
    released = released + redis.call('DEL', KEYS[3])
end
return released
