-- ARGV: window (ms, how long a client of a dead node may come back elsewhere). Reaps every
-- registered node whose alive key has expired (a dead node): its seats stay, away, for
-- `window` (its clients may recover on another node, `adopt`), and the other member's node
-- is told 'a <code> <seat>' (userLeft); then they are freed, and a room left with no seat is
-- deleted. Any node may run it, any number of times. Answers how many nodes it reaped.
local window = tonumber(ARGV[1])
local now = now_ms()
local reaped = 0
for _, n in ipairs(redis.call('SMEMBERS', P .. 'nodes')) do
  if redis.call('EXISTS', P .. 'alive:' .. n) == 0 then
    reaped = reaped + 1
    for _, code in ipairs(redis.call('SMEMBERS', P .. 'seats:' .. n)) do
      local room = P .. 'room:' .. code
      local r = redis.call('HMGET', room, 's1', 's2')
      for i = 1, 2 do
        if r[i] and seat_node(r[i]) == n and not is_away(r[i]) then
          redis.call('HSET', room, 's' .. i, r[i] .. ' a')
          local other = r[3 - i]
          if other and seat_node(other) ~= n then
            tell(seat_node(other), 'a ' .. code .. ' ' .. r[i])
          end
        end
      end
      redis.call('ZADD', P .. 'orphans', now + window, n .. ' ' .. code)
    end
    redis.call('DEL', P .. 'seats:' .. n, P .. 'synced:' .. n)
    redis.call('SREM', P .. 'nodes', n)
  end
end
-- Seats of dead nodes whose clients did not come back in time.
for _, m in ipairs(redis.call('ZRANGEBYSCORE', P .. 'orphans', '-inf', now)) do
  local n, code = string.match(m, '^(%S+) (%S+)$')
  -- A node taken for dead that came back has put its seats back (`resync`).
  if n and redis.call('SISMEMBER', P .. 'nodes', n) == 0 then
    local room = P .. 'room:' .. code
    local r = redis.call('HMGET', room, 's1', 's2')
    for i = 1, 2 do
      if r[i] and seat_node(r[i]) == n and is_away(r[i]) then
        redis.call('HDEL', room, 's' .. i)
        r[i] = nil
      end
    end
    if not r[1] and not r[2] then redis.call('DEL', room, P .. 'hist:' .. code) end
  end
  redis.call('ZREM', P .. 'orphans', m)
end
return reaped
