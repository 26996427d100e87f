-- ARGV: node, then for each member this node has: code, seat ("<sid>" or "<sid> a"), id, exp,
-- keep_until. Run when the node's link to Redis is (re)made, before anything else: Redis then
-- holds exactly this node's seats. A seat of this node that it no longer has is freed (as
-- 'gone'); a member's room that is missing (Redis restarted, or the node was reaped) is made
-- again with the same id and expiry; a seat taken meanwhile is lost. Answers the lost members
-- as "<code> <sid>".
local node = ARGV[1]
local mine = {}
local n = (#ARGV - 1) / 5
for k = 0, n - 1 do
  local code = ARGV[2 + k * 5]
  mine[code] = mine[code] or {}
  mine[code][#mine[code] + 1] = k
end
local seats = P .. 'seats:' .. node
-- Seats Redis has for this node that it does not have any more.
for _, code in ipairs(redis.call('SMEMBERS', seats)) do
  local room = P .. 'room:' .. code
  local r = redis.call('HMGET', room, 's1', 's2')
  for i = 1, 2 do
    if r[i] and seat_node(r[i]) == node then
      local keep = false
      for _, k in ipairs(mine[code] or {}) do
        if seat_sid(r[i]) == string.match(ARGV[3 + k * 5], '^(%S+)') then keep = true end
      end
      if not keep then
        local other, freed = r[3 - i], r[i]
        r[i] = nil
        if not other then
          redis.call('DEL', room, P .. 'hist:' .. code)
        else
          redis.call('HDEL', room, 's' .. i)
          if seat_node(other) ~= node and not is_away(freed) then
            tell(seat_node(other), 'l ' .. code .. ' ' .. seat_sid(freed))
          end
        end
      end
    end
  end
  if not mine[code] then redis.call('SREM', seats, code) end
end
local lost = {}
for k = 0, n - 1 do
  local code, seat, id = ARGV[2 + k * 5], ARGV[3 + k * 5], ARGV[4 + k * 5]
  local sid = string.match(seat, '^(%S+)')
  local room = P .. 'room:' .. code
  local r = redis.call('HMGET', room, 'id', 's1', 's2')
  local value = node .. ' ' .. seat
  if not r[1] then
    redis.call('HSET', room, 'id', id, 'exp', ARGV[5 + k * 5], 's1', value)
    redis.call('PEXPIREAT', room, ARGV[6 + k * 5])
    redis.call('SADD', seats, code)
  elseif r[1] ~= id then
    lost[#lost + 1] = code .. ' ' .. sid
  else
    local s = {r[2], r[3]}
    local held = false
    for i = 1, 2 do
      if s[i] and seat_of(s[i]) == node .. ' ' .. sid then
        held = true
        redis.call('HSET', room, 's' .. i, value)
      end
    end
    if not held then
      local free = nil
      for i = 1, 2 do
        if not s[i] and not free then free = i end
      end
      if free then
        redis.call('HSET', room, 's' .. free, value)
        redis.call('SADD', seats, code)
        local other = s[3 - free]
        if other and seat_node(other) ~= node and not is_away(value) then
          tell(seat_node(other), 'j ' .. code .. ' ' .. sid)
        end
      else
        lost[#lost + 1] = code .. ' ' .. sid
      end
    end
  end
end
return lost
