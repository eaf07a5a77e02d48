-- One page of a task's enabled index in spread order: ascending score (the
-- user's spread key; 0 for entries written before the index was scored),
-- then member bytes, strictly after a cursor (score, member). The cursor
-- need not be in the index any more. O(log N + page): ranks come from
-- ZCOUNT, the run of entries sharing the cursor's score is bisected by rank
-- (usually one entry; every legacy entry shares score 0).
--
-- KEYS[1]: {prefix}:index:enabled:{task} (ZSET user -> spread key)
-- ARGV[1]: the cursor's score (an integer below 2^52), '' to start at the
--          first entry
-- ARGV[2]: the cursor's member (the user id)
-- ARGV[3]: the most entries to return (at least 1)
-- ARGV[4]: '1' to place the cursor by its member alone: at its entry's
--          score when it is in the index, else at 0 when the index still
--          holds score-0 entries (never skips one), else at ARGV[1]
-- Returns: flat array member, score, member, score, ... (scores as text)

-- Byte order, as Redis orders members of equal score (Lua's own string
-- comparison follows the server's locale).
local function after(member, cursor)
    if member == cursor then
        return false
    end
    local length = math.min(#member, #cursor)
    for i = 1, length do
        local a, b = string.byte(member, i), string.byte(cursor, i)
        if a ~= b then
            return a > b
        end
    end
    return #member > #cursor
end

local key = KEYS[1]
local score = ARGV[1]
local cursor = ARGV[2]
local limit = tonumber(ARGV[3])
if ARGV[4] == '1' then
    local stored = redis.call('ZSCORE', key, cursor)
    if stored then
        score = stored
    elseif redis.call('ZCOUNT', key, 0, 0) > 0 then
        score = '0'
    end
end

local start = 0
if score ~= '' then
    local low = redis.call('ZCOUNT', key, '-inf', '(' .. score)
    local high = low + redis.call('ZCOUNT', key, score, score)
    while low < high do
        local middle = math.floor((low + high) / 2)
        local member = redis.call('ZRANGE', key, middle, middle)[1]
        if after(member, cursor) then
            high = middle
        else
            low = middle + 1
        end
    end
    start = low
end
return redis.call('ZRANGE', key, start, start + limit - 1, 'WITHSCORES')
