-- Records the last fire handled of some zone groups of a task, and the
-- instant up to which its groups were evaluated (field '@checked'), unless a
-- lock holder with a greater fence wrote one of them since or took the
-- lock since (the caller then lost its lock).
--
-- KEYS[1]: {prefix}:schedule:zones:{task}, a HASH zone (or '@checked') ->
--          '<RFC 3339 instant>|fence=<n>'
-- KEYS[2]: {prefix}:schedule:lock:{task}:fence, the lock's fence counter
-- ARGV[1]: the caller's fence n
-- ARGV[2 + 2i], ARGV[3 + 2i]: field i (a zone, or '@checked') and its new
--          value
-- Returns: 1 when written, 0 when a greater fence is stored or was handed
--          out (nothing written).
local fence = tonumber(ARGV[1])
if tonumber(redis.call('GET', KEYS[2]) or '0') > fence then
    return 0
end
for i = 2, #ARGV, 2 do
    local current = redis.call('HGET', KEYS[1], ARGV[i])
    if current then
        local stored = tonumber(string.match(current, '|fence=(%d+)$')) or 0
        if stored > fence then
            return 0
        end
    end
end
for i = 2, #ARGV, 2 do
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
return 1
