-- ARGV: code, from (the node the member was on), sid, to (the node it moves to), tag, pid,
-- ttl: pid:<pid> names the new node (for ttl ms at most; that node deletes it when the socket
-- is gone), so a later claim of the socket finds it there.
-- Moves a member's seat to another node (connection state recovery there), away if it was:
-- 'ok', or 'lost' when the seat is not the member's any more. The new node is told in the same
-- script, 'M <tag> <code> <sid> <pid> <id> <exp> <a|-> <seq> <other seat>', so every change to the
-- room after this reaches it, in order. A partner's node elsewhere is told 'r <code> <seat>';
-- the new node takes an away seat back ('back' in leave.lua) once the socket is there.
local code, from, sid, to, tag = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local pid, ttl = ARGV[6], ARGV[7]
local room = P .. 'room:' .. code
local r = redis.call('HMGET', room, 's1', 's2', 'id', 'exp', 'seq')
local me = from .. ' ' .. sid
local seat = nil
for i = 1, 2 do
  if r[i] and seat_of(r[i]) == me then seat = i end
end
if not seat then return 'lost' end
local was, other = r[seat], r[3 - seat]
local away = is_away(was)
local moved = to .. ' ' .. sid
if away then moved = moved .. ' a' end
redis.call('HSET', room, 's' .. seat, moved)
r[seat] = moved
forget_seat(from, code, r[1], r[2])
redis.call('SADD', P .. 'seats:' .. to, code)
redis.call('SET', P .. 'pid:' .. pid, to, 'PX', ttl)
local state = '-'
if away then state = 'a' end
-- A partner on a third node only notes where the seat is now.
if other and seat_node(other) ~= from and seat_node(other) ~= to then
  tell(seat_node(other), 'r ' .. code .. ' ' .. moved)
end
tell(to, 'M ' .. tag .. ' ' .. code .. ' ' .. sid .. ' ' .. pid .. ' ' .. r[3] .. ' ' .. r[4] .. ' '
  .. state .. ' ' .. (r[5] or '0') .. ' ' .. (other or ''))
return 'ok'
