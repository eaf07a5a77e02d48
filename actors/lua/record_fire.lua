-- Records the last fire handled for a task, unless a lock holder with a
-- greater fence wrote since or took the lock since (the caller then lost its
-- lock).
--
-- KEYS[1]: {prefix}:schedule:{task}, a STRING '<RFC 3339 instant>|fence=<n>'
--          (a bare RFC 3339 instant counts as fence 0)
-- KEYS[2]: {prefix}:schedule:lock:{task}:fence, the lock's fence counter
-- ARGV[1]: the new value, '<RFC 3339 instant>|fence=<n>'
-- ARGV[2]: the caller's fence n
-- Returns: 1 when written, 0 when a greater fence is stored or was handed
--          out (nothing written).
local fence = tonumber(ARGV[2])
if tonumber(redis.call('GET', KEYS[2]) or '0') > fence then
    return 0
end
local current = redis.call('GET', KEYS[1])
if current then
    local stored = tonumber(string.match(current, '|fence=(%d+)$')) or 0
    if stored > fence then
        return 0
    end
end
redis.call('SET', KEYS[1], ARGV[1])
return 1
