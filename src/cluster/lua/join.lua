-- ARGV: code, node, sid, deadline. {'ok', id, exp, other seat or '', seq, message…} (the
-- history, oldest first; `seq` numbers the last), or {'nf'} (no such room), {'full'} or {'late'}. Takes a free seat, else an
-- away member's (its node is told 'u <code> <sid>'); the other seat's node, if not the
-- caller's, is told 'j <code> <seat>'.
local code, node, sid = ARGV[1], ARGV[2], ARGV[3]
if late(ARGV[4]) then return {'late'} end
local room = P .. 'room:' .. code
local r = redis.call('HMGET', room, 'id', 'exp', 's1', 's2', 'seq')
if not r[1] then return {'nf'} end
local me = node .. ' ' .. sid
local s = {r[3], r[4]}
local mine = false
for i = 1, 2 do
  if s[i] and seat_of(s[i]) == me then mine = true end
end
if not mine then
  local seat = nil
  for i = 1, 2 do
    if not s[i] and not seat then seat = i end
  end
  if not seat then
    for i = 1, 2 do
      if is_away(s[i]) and not seat then seat = i end
    end
    if not seat then return {'full'} end
    local was = s[seat]
    tell(seat_node(was), 'u ' .. code .. ' ' .. seat_sid(was))
    s[seat] = nil
    forget_seat(seat_node(was), code, s[1], s[2])
  end
  redis.call('HSET', room, 's' .. seat, me)
  redis.call('SADD', P .. 'seats:' .. node, code)
  local other = s[3 - seat]
  if other and seat_node(other) ~= node then
    tell(seat_node(other), 'j ' .. code .. ' ' .. me)
  end
end
local other = ''
for i = 1, 2 do
  if s[i] and seat_of(s[i]) ~= me then other = s[i] end
end
local out = {'ok', r[1], r[2], other, tonumber(r[5] or '0')}
for _, m in ipairs(redis.call('LRANGE', P .. 'hist:' .. code, 0, -1)) do
  out[#out + 1] = m
end
return out
