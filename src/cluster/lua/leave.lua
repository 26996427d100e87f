-- ARGV: code, node, sid, mode: 'gone' (the seat is freed; a room left with no seat is
-- deleted), 'away' (the seat is kept, marked away) or 'back' (an away seat is taken back:
-- 'ok', or 'lost' when it is not ours any more). The other seat's node, if not the caller's,
-- is told '<l|a|j> <code> <seat>' (left for good, away, back).
local code, node, sid, mode = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local room = P .. 'room:' .. code
local r = redis.call('HMGET', room, 's1', 's2')
local me = node .. ' ' .. sid
local seat = nil
for i = 1, 2 do
  if r[i] and seat_of(r[i]) == me then seat = i end
end
if not seat then
  if mode == 'back' then return 'lost' end
  return 'ok'
end
local was = r[seat]
if mode == 'back' and not is_away(was) then return 'ok' end
local other = r[3 - seat]
if mode == 'gone' then
  r[seat] = nil
  if not other then
    redis.call('DEL', room, P .. 'hist:' .. code)
  else
    redis.call('HDEL', room, 's' .. seat)
  end
  forget_seat(node, code, r[1], r[2])
elseif mode == 'away' then
  if is_away(was) then return 'ok' end
  redis.call('HSET', room, 's' .. seat, me .. ' a')
else
  redis.call('HSET', room, 's' .. seat, me)
end
-- A member gone for good after being away: its partner was told when it went away.
if other and seat_node(other) ~= node and not (mode == 'gone' and is_away(was)) then
  local event = 'l'
  if mode == 'away' then event = 'a' elseif mode == 'back' then event = 'j' end
  tell(seat_node(other), event .. ' ' .. code .. ' ' .. me)
end
return 'ok'
