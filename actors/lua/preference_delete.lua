-- Removes a user's preference and settings for one task, and the user from
-- the task's indexes (its zone group included), atomically.
--
-- KEYS[1]: {prefix}:users:{user}:tasks (HASH task -> 0/1)
-- KEYS[2]: {prefix}:users:{user}:settings:{task} (HASH)
-- KEYS[3]: {prefix}:index:enabled:{task} (ZSET)
-- KEYS[4]: {prefix}:index:custom:{task} (ZSET)
-- KEYS[5]: {prefix}:users:modified:{bucket} (HASH user -> epoch ms)
-- KEYS[6]: {prefix}:users:{user}:last_modified (STRING of older releases)
-- KEYS[7]: {prefix}:users:timezone:{bucket} (HASH user -> default zone)
-- ARGV[1]: the task id
-- ARGV[2]: the user id
-- ARGV[3]: the task's zone index key, '{Z}' standing for the zone
-- Returns: 1 when a preference or settings were removed, 0 otherwise.
local function zone_key(zone)
    return (string.gsub(ARGV[3], '{Z}', function() return zone end))
end
local task_zone = redis.call('HGET', KEYS[2], 'timezone')
local default_zone = redis.call('HGET', KEYS[7], ARGV[2])
if task_zone then
    redis.call('ZREM', zone_key(task_zone), ARGV[2])
end
if default_zone then
    redis.call('ZREM', zone_key(default_zone), ARGV[2])
end
local removed = redis.call('HDEL', KEYS[1], ARGV[1]) + redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[2])
redis.call('ZREM', KEYS[4], ARGV[2])
if redis.call('EXISTS', KEYS[1]) == 0 then
    redis.call('HDEL', KEYS[5], ARGV[2])
    redis.call('DEL', KEYS[6])
end
if removed > 0 then
    return 1
end
return 0
