-- Users of a custom-interval due index whose next fire has come, with their
-- settings, earliest first.
--
-- KEYS[1]: {prefix}:index:custom:{task}, a ZSET user -> next fire (epoch ms)
-- ARGV[1]: now (epoch ms)
-- ARGV[2]: at most this many users
-- ARGV[3]: settings key prefix, '{prefix}:users:'
-- ARGV[4]: settings key suffix, ':settings:{task}'
-- Returns: a flat array user, fire (epoch ms), settings HASH as a flat
--          field/value array, for each due user.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1],
    'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for i = 1, #due, 2 do
    local user = due[i]
    out[#out + 1] = user
    out[#out + 1] = due[i + 1]
    out[#out + 1] = redis.call('HGETALL', ARGV[3] .. user .. ARGV[4])
end
return out
