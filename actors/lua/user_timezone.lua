-- Sets or removes a user's default time zone and moves every task the
-- user has enabled on its own interval, without a per-task zone, from the
-- group of the old default zone to the group of the new one (the enabled
-- index stands for "no zone"). Tasks on a custom interval stay put.
--
-- KEYS[1]: {prefix}:users:timezone:{bucket} (HASH user -> default zone)
-- KEYS[2]: {prefix}:users:{user}:tasks (HASH task -> 0/1)
-- ARGV[1]: the user id
-- ARGV[2]: the new default zone, '' to remove it
-- ARGV[3]: the user's settings key, '{T}' standing for the task
-- ARGV[4]: the enabled index key, '{T}' for the task
-- ARGV[5]: the zone index key, '{T}' for the task and '{Z}' for the zone
-- ARGV[6]: the zone set key, '{T}' for the task
-- (The keys these templates name are the tasks the user's hash lists.)
-- Returns: the number of tasks moved.
local function fill(template, task, zone)
    local key = string.gsub(template, '{T}', function() return task end)
    if zone then
        key = string.gsub(key, '{Z}', function() return zone end)
    end
    return key
end
local user = ARGV[1]
local new_zone = ARGV[2]
local old_zone = redis.call('HGET', KEYS[1], user)
if new_zone == '' then
    redis.call('HDEL', KEYS[1], user)
else
    redis.call('HSET', KEYS[1], user, new_zone)
end
local function place(task, zone)
    if zone then
        return fill(ARGV[5], task, zone)
    end
    return fill(ARGV[4], task)
end
local moved = 0
local tasks = redis.call('HGETALL', KEYS[2])
for i = 1, #tasks, 2 do
    local task = tasks[i]
    if tasks[i + 1] == '1' then
        local settings = fill(ARGV[3], task)
        if redis.call('HEXISTS', settings, 'timezone') == 0
            and redis.call('HEXISTS', settings, 'custom_interval') == 0 then
            local from = place(task, old_zone or nil)
            local score = redis.call('ZSCORE', from, user)
            if score then
                redis.call('ZREM', from, user)
                if new_zone == '' then
                    redis.call('ZADD', place(task, nil), score, user)
                else
                    redis.call('ZADD', place(task, new_zone), score, user)
                    redis.call('SADD', fill(ARGV[6], task), new_zone)
                end
                moved = moved + 1
            end
        end
    end
end
return moved
