-- No ARGV. Frees the seats of every registered node whose alive key has expired (a dead
-- node): the other member's node is told 'l <code> <seat>', a room left with no seat is
-- deleted. Any node may run it, any number of times. Answers how many nodes it reaped.
local reaped = 0
for _, n in ipairs(redis.call('SMEMBERS', P .. 'nodes')) do
  if redis.call('EXISTS', P .. 'alive:' .. n) == 0 then
    reaped = reaped + 1
    for _, code in ipairs(redis.call('SMEMBERS', P .. 'seats:' .. n)) do
      local room = P .. 'room:' .. code
      local r = redis.call('HMGET', room, 's1', 's2')
      local gone, kept = {}, {}
      for i = 1, 2 do
        if r[i] and seat_node(r[i]) == n then
          redis.call('HDEL', room, 's' .. i)
          gone[#gone + 1] = r[i]
        elseif r[i] then
          kept[#kept + 1] = r[i]
        end
      end
      if #kept == 0 then
        redis.call('DEL', room, P .. 'hist:' .. code)
      else
        for _, g in ipairs(gone) do
          if not is_away(g) then
            tell(seat_node(kept[1]), 'l ' .. code .. ' ' .. seat_of(g))
          end
        end
      end
    end
    redis.call('DEL', P .. 'seats:' .. n, P .. 'synced:' .. n)
    redis.call('SREM', P .. 'nodes', n)
  end
end
return reaped
