-- Saves a fan-out run and changes its slot lists in one step, if the caller
-- still holds the latest fence of the task's schedule lock.
--
-- KEYS[1]: {prefix}:fanout:{task}, HASH run id -> run JSON
-- KEYS[2]: {prefix}:schedule:lock:{task}:fence, the lock's fence counter
-- KEYS[3]: {prefix}:fanout:{task}:last, the last finished run
-- KEYS[4..]: slot lists, {prefix}:distribution:{task}:{run}:{slot}
-- ARGV[1]: the caller's fence
-- ARGV[2]: the run id
-- ARGV[3]: the run's JSON record
-- ARGV[4]: 'save' (store the record) or 'finish' (delete it from the hash
--          and keep it as the last run)
-- ARGV[5]: time to live of the slot lists, in milliseconds
-- ARGV[6..]: for each list of KEYS[4..], in order: how many ids to drop
--            from its head, how many to append, then the ids to append
-- Returns: 1 when written, 0 when a later holder took the lock (nothing
--          written).
local fence = tonumber(redis.call('GET', KEYS[2]) or '0')
if fence ~= tonumber(ARGV[1]) then
    return 0
end
local at = 6
for k = 4, #KEYS do
    local trim = tonumber(ARGV[at])
    local count = tonumber(ARGV[at + 1])
    at = at + 2
    if trim > 0 then
        redis.call('LTRIM', KEYS[k], trim, -1)
    end
    local done = 0
    while done < count do
        local chunk = math.min(count - done, 4000)
        redis.call('RPUSH', KEYS[k], unpack(ARGV, at + done, at + done + chunk - 1))
        done = done + chunk
    end
    at = at + count
    if count > 0 then
        redis.call('PEXPIRE', KEYS[k], ARGV[5])
    end
end
if ARGV[4] == 'finish' then
    redis.call('HDEL', KEYS[1], ARGV[2])
    redis.call('SET', KEYS[3], ARGV[3])
else
    redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
end
return 1
