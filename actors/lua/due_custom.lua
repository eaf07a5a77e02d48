-- The settings of the users of a custom-interval due index that are still
-- due, read in one step with the index, in the order given. The caller
-- lists the due users first (ZRANGEBYSCORE) and passes their settings keys
-- here, so every key the script touches arrives in KEYS.
--
-- KEYS[1]: {prefix}:index:custom:{task}, a ZSET user -> next fire (epoch ms)
-- KEYS[1 + i] for i = 1, 2, ...: {prefix}:users:{user i}:settings:{task}
--          (HASH), the settings of the user in ARGV[1 + i]
-- ARGV[1]: now (epoch ms)
-- ARGV[1 + i]: user id i
-- Returns: a flat array user, fire (epoch ms), settings HASH as a flat
--          field/value array, for each user still due (next fire <= now);
--          a user moved on or removed since it was listed is left out.
local now = tonumber(ARGV[1])
local out = {}
for i = 2, #KEYS do
    local user = ARGV[i]
    local fire = redis.call('ZSCORE', KEYS[1], user)
    if fire and tonumber(fire) <= now then
        out[#out + 1] = user
        out[#out + 1] = fire
        out[#out + 1] = redis.call('HGETALL', KEYS[i])
    end
end
return out
