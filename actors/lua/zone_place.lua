-- Places users of one task in the index of their zone group: out of every
-- group they may be in (the enabled index, the group of their old
-- per-task zone, the group of their default zone), then, for a user on the
-- task's own interval, into the group of the per-task zone, else of the
-- default zone, else into the enabled index. Runs inside the preference
-- write's MULTI, before the settings hash is replaced (it reads the old
-- per-task zone from it).
--
-- KEYS[1]: {prefix}:index:enabled:{task} (ZSET user -> spread key)
-- KEYS[2]: {prefix}:index:zones:{task} (SET of zone names)
-- KEYS[3 + 2i], KEYS[4 + 2i] for user i = 0, 1, ...:
--          {prefix}:users:{user}:settings:{task} (HASH, field 'timezone')
--          {prefix}:users:timezone:{bucket} (HASH user -> default zone)
-- ARGV[1]: the task's zone index key with '{Z}' standing for the zone
--          ({prefix}:index:zone:{task}:{Z})
-- ARGV[2 + 4i] .. ARGV[5 + 4i] for user i:
--          user id; spread key; '1' when the user is on the task's own
--          interval, '0' when in no group (disabled, custom interval);
--          the new per-task zone, '' for none
-- Returns: the number of users placed in a group.
local function zone_key(zone)
    return (string.gsub(ARGV[1], '{Z}', function() return zone end))
end
local placed = 0
local users = (#ARGV - 1) / 4
for i = 0, users - 1 do
    local user = ARGV[2 + 4 * i]
    local spread = ARGV[3 + 4 * i]
    local own = ARGV[4 + 4 * i]
    local new_zone = ARGV[5 + 4 * i]
    local old_zone = redis.call('HGET', KEYS[3 + 2 * i], 'timezone')
    local default_zone = redis.call('HGET', KEYS[4 + 2 * i], user)
    redis.call('ZREM', KEYS[1], user)
    if old_zone then
        redis.call('ZREM', zone_key(old_zone), user)
    end
    if default_zone and default_zone ~= old_zone then
        redis.call('ZREM', zone_key(default_zone), user)
    end
    if own == '1' then
        local zone = new_zone
        if zone == '' then
            zone = default_zone
        end
        if zone then
            redis.call('ZADD', zone_key(zone), spread, user)
            redis.call('SADD', KEYS[2], zone)
        else
            redis.call('ZADD', KEYS[1], spread, user)
        end
        placed = placed + 1
    end
end
return placed
