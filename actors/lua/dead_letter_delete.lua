-- Removes the dead letter of one job: its record, its members in both
-- indexes and its replay claim.
--
-- KEYS[1]: {prefix}:dead:{job id}, the record (STRING, JSON)
-- KEYS[2]: {prefix}:dead:index, every task's dead letters (ZSET, score 0)
-- KEYS[3]: {prefix}:dead:index:{task}, the task's dead letters (ZSET, score 0)
-- KEYS[4]: {prefix}:dead:{job id}:replay, the replay claim (STRING)
-- ARGV[1]: the record's member, `<epoch ms, 13 digits>:<job id>`
-- Returns: 1 when the record existed, else 0.
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('DEL', KEYS[4])
return redis.call('DEL', KEYS[1])
