-- Stores a new fan-out run with its first slot lists, unless a run with the
-- same id exists (a retried trigger, a resumed period) or, for a run made
-- under the task's schedule lock, a later holder took the lock.
--
-- KEYS[1]: {prefix}:fanout:{task}, HASH run id -> run JSON
-- KEYS[2]: {prefix}:schedule:lock:{task}:fence, the lock's fence counter
-- KEYS[3..]: the slot lists to fill, {prefix}:distribution:{task}:{run}:{slot}
-- ARGV[1]: the run id
-- ARGV[2]: the run's JSON record
-- ARGV[3]: time to live of the slot lists, in milliseconds
-- ARGV[4]: the caller's fence, '' for a run made without the lock (a trigger)
-- ARGV[5..]: for each list of KEYS[3..], in order: the number of user ids,
--            then the user ids
-- Returns: 1 when created, 0 when the run existed or the fence is stale
--          (nothing written).
if ARGV[4] ~= '' then
    local fence = tonumber(redis.call('GET', KEYS[2]) or '0')
    if fence ~= tonumber(ARGV[4]) then
        return 0
    end
end
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then
    return 0
end
local at = 5
for k = 3, #KEYS do
    local count = tonumber(ARGV[at])
    at = at + 1
    local done = 0
    while done < count do
        local chunk = math.min(count - done, 4000)
        redis.call('RPUSH', KEYS[k], unpack(ARGV, at + done, at + done + chunk - 1))
        done = done + chunk
    end
    at = at + count
    if count > 0 then
        redis.call('PEXPIRE', KEYS[k], ARGV[3])
    end
end
return 1
