-- Claims one execution of a job before its endpoint is called: checks the
-- job's success marker, takes the per-job execution claim, then (under the
-- overlap guard) the (task, user) run claim, and reads the user's
-- parameters for the task, and records the attempt as `running` (the
-- job's result), all at once.
--
-- KEYS[1]: {prefix}:job:{job id}:done, the success marker (STRING)
-- KEYS[2]: {prefix}:running:{task}:job.{job id}, the execution claim (STRING
--          holding the execution id)
-- KEYS[3]: {prefix}:running:{task}:{user}, the run claim (STRING holding the
--          job id)
-- KEYS[4]: {prefix}:users:{user}:settings:{task}, the user's settings (HASH)
-- KEYS[5]: {prefix}:pause:{task}, the task's `Retry-After` pause (STRING)
-- KEYS[6]: {prefix}:job:{job id}:next, the job's next try (HASH attempt,
--          eligible)
-- KEYS[7]: {prefix}:users:{user}:tasks, the user's enabled tasks (HASH
--          task -> 1/0)
-- KEYS[8]: {prefix}:job:{job id}:result, the job's latest result (HASH
--          record, finished; pending until the first claim)
-- KEYS[9]: {prefix}:users:{user}:runs:{task}, the user's recent jobs of
--          the task (LIST of job ids, newest first)
-- ARGV[1]: the execution id (holder of the execution claim)
-- ARGV[2]: time to live of the execution claim in milliseconds
-- ARGV[3]: the job id (holder of the run claim)
-- ARGV[4]: time to live of the run claim in milliseconds; 0 when the
--          overlap guard does not apply (the run claim is not touched)
-- ARGV[5]: the copy's attempt
-- ARGV[6]: the copy's execute_after, epoch milliseconds
-- ARGV[7]: the task id (the field of KEYS[7])
-- ARGV[8]: '1' for a job of a scheduled fan-out: then a user whose
--          preferences do not enable the task (no field, or no
--          preferences at all: the user is gone) is skipped too; '0' when
--          only an explicit '0' (disabled) skips (a trigger may name any
--          user)
-- ARGV[9]: the job's `running` record (JSON), written when the claim
--          succeeds; empty to write none
-- ARGV[10]: time to live of the result records in milliseconds
-- ARGV[11]: most job ids kept in KEYS[9]
-- Returns: {'succeeded'} when the marker exists; {'disabled'} when the
--          user disabled the task, or (ARGV[8] = '1') does not have it
--          enabled (nothing claimed); {'stale'} when the copy
--          is older than the job's next try (a smaller attempt, or the
--          same attempt due earlier); {'paused', ms} when the
--          task is paused for ms more milliseconds (nothing claimed);
--          {'job_busy'} when another
--          execution holds the job; {'user_busy'} when another job holds the
--          run claim (the execution claim just taken is released again);
--          else {'claimed', name1, value1, ...}: the `param:<name>` fields of
--          the settings hash, prefix stripped.
if redis.call('EXISTS', KEYS[1]) == 1 then
    return {'succeeded'}
end
local enabled = redis.call('HGET', KEYS[7], ARGV[7])
if enabled == '0' or (ARGV[8] == '1' and enabled ~= '1') then
    return {'disabled'}
end
local next_try = redis.call('HMGET', KEYS[6], 'attempt', 'eligible')
local next_attempt = tonumber(next_try[1])
if next_attempt then
    local attempt = tonumber(ARGV[5])
    if attempt < next_attempt
        or (attempt == next_attempt and tonumber(ARGV[6]) < tonumber(next_try[2])) then
        return {'stale'}
    end
end
local pause = redis.call('PTTL', KEYS[5])
if pause > 0 then
    return {'paused', tostring(pause)}
end

local function claim(key, holder, ttl)
    if redis.call('SET', key, holder, 'NX', 'PX', ttl) then
        return true
    end
    if redis.call('GET', key) == holder then
        redis.call('PEXPIRE', key, ttl)
        return true
    end
    return false
end

if not claim(KEYS[2], ARGV[1], ARGV[2]) then
    return {'job_busy'}
end
if tonumber(ARGV[4]) > 0 and not claim(KEYS[3], ARGV[3], ARGV[4]) then
    redis.call('DEL', KEYS[2])
    return {'user_busy'}
end

if ARGV[9] ~= '' then
    -- The first claim of a job enters it in the user's runs list. Its
    -- record replaces the `pending` one, and a later claim drops a
    -- `pending` a republish wrote meanwhile.
    if redis.call('HEXISTS', KEYS[8], 'record') == 0 then
        redis.call('LPUSH', KEYS[9], ARGV[3])
        redis.call('LTRIM', KEYS[9], 0, tonumber(ARGV[11]) - 1)
    end
    redis.call('HDEL', KEYS[8], 'pending')
    redis.call('HSET', KEYS[8], 'record', ARGV[9])
    redis.call('PEXPIRE', KEYS[8], ARGV[10])
    redis.call('PEXPIRE', KEYS[9], ARGV[10])
end

local reply = {'claimed'}
local fields = redis.call('HGETALL', KEYS[4])
for i = 1, #fields, 2 do
    local name = fields[i]
    if string.sub(name, 1, 6) == 'param:' then
        reply[#reply + 1] = string.sub(name, 7)
        reply[#reply + 1] = fields[i + 1]
    end
end
return reply
