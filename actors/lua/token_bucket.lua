-- Token bucket: takes ARGV[3] tokens from the bucket if it holds that many.
-- The spec's rate_limit.lua, with two changes: elapsed time is never
-- negative (a caller whose clock is behind neither drains the bucket nor
-- moves last_refill back), and numbers are written with full precision.
--
-- KEYS[1]: the bucket, a HASH {tokens, last_refill}
--          ({prefix}:ratelimit:global or {prefix}:ratelimit:task:{task})
-- ARGV[1]: max_tokens (capacity, float)
-- ARGV[2]: refill_rate (tokens per second, float)
-- ARGV[3]: requested (tokens to take, >= 1)
-- ARGV[4]: now (seconds since the epoch, float, the caller's clock)
-- Returns: 1 when the tokens were taken, 0 otherwise (bucket untouched).
local key = KEYS[1]
local max_tokens = tonumber(ARGV[1])
local refill_rate = tonumber(ARGV[2])
local requested = tonumber(ARGV[3])
local now = tonumber(ARGV[4])

local bucket = redis.call('HMGET', key, 'tokens', 'last_refill')
local tokens = tonumber(bucket[1]) or max_tokens
local last_refill = tonumber(bucket[2]) or now

local elapsed = now - last_refill
if elapsed < 0 then
    elapsed = 0
end
tokens = math.min(max_tokens, tokens + elapsed * refill_rate)

if tokens >= requested then
    tokens = tokens - requested
    redis.call('HSET', key,
        'tokens', string.format('%.17g', tokens),
        'last_refill', string.format('%.17g', math.max(last_refill, now)))
    redis.call('EXPIRE', key, 3600)
    return 1
else
    return 0
end
