-- ARGV: code, id. Deletes the room if it is still the one with that id (a code can be drawn
-- again once its room is gone). Every node with a member fires its own timer at the room's
-- `exp`; the first one deletes.
local code = ARGV[1]
local room = P .. 'room:' .. code
local r = redis.call('HMGET', room, 'id', 's1', 's2')
if r[1] ~= ARGV[2] then return 0 end
redis.call('DEL', room, P .. 'hist:' .. code)
for i = 2, 3 do
  if r[i] then redis.call('SREM', P .. 'seats:' .. seat_node(r[i]), code) end
end
return 1
