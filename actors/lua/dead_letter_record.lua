-- Records (or replaces) the dead letter of one job: its JSON record and
-- its member in the index of all tasks and in its task's index. A job
-- dead-lettered again (after a replay) keeps one entry, at its new place.
--
-- KEYS[1]: {prefix}:dead:{job id}, the record (STRING, JSON)
-- KEYS[2]: {prefix}:dead:index, every task's dead letters (ZSET, score 0)
-- KEYS[3]: {prefix}:dead:index:{task}, the task's dead letters (ZSET, score 0)
-- ARGV[1]: the record, JSON
-- ARGV[2]: the member, `<epoch ms, 13 digits>:<job id>`
-- ARGV[3]: the member of the job's previous record; empty when none
-- Returns: 1 when a previous member was removed, else 0.
local removed = 0
if ARGV[3] ~= '' and ARGV[3] ~= ARGV[2] then
    removed = redis.call('ZREM', KEYS[2], ARGV[3])
    redis.call('ZREM', KEYS[3], ARGV[3])
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], 0, ARGV[2])
redis.call('ZADD', KEYS[3], 0, ARGV[2])
return removed
