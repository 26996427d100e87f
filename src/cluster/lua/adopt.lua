-- ARGV: pid, record (pid:<pid> as `claim` read it), node (the claiming one), has (how many
-- of the room's messages the client has), count, base (the new record's, see `Record` in
-- mod.rs), most (messages it may be sent again), deadline. The socket of a dead node comes
-- back on the claiming node: its seat moves there, present; a partner's node that was told it
-- was away hears it joined ('j <code> <seat>'), one that was not notes where it is now ('r'). Answers
-- {'ok', id, exp, other seat or '', seq, 1 if it was away else 0, message…} (the messages
-- after the first `has`), or {'lost'}: the record changed, its node lives, the seat is not
-- the socket's any more, the room is gone, or the history no longer holds all the client
-- missed (or it is more than `most`, or it is not numbered right: `gap`, see append.lua), or
-- {'late'}.
if late(ARGV[8]) then return {'late'} end
local key = P .. 'pid:' .. ARGV[1]
local record, me, has = ARGV[2], ARGV[3], tonumber(ARGV[4])
if redis.call('GET', key) ~= record then return {'lost'} end
local node, sid, code = string.match(record, '^(%S+) (%S+) (%S+)')
if not code or redis.call('EXISTS', P .. 'alive:' .. node) == 1 then return {'lost'} end
local room = P .. 'room:' .. code
local r = redis.call('HMGET', room, 'id', 'exp', 's1', 's2', 'seq', 'gap')
if not r[1] then return {'lost'} end
local seat = nil
for i = 1, 2 do
  if r[2 + i] and seat_of(r[2 + i]) == node .. ' ' .. sid then seat = i end
end
if not seat then return {'lost'} end
local seq = tonumber(r[5] or '0')
local hist = P .. 'hist:' .. code
local first = seq - redis.call('LLEN', hist) + 1
if has > seq or has + 1 < first or seq - has > tonumber(ARGV[7]) then return {'lost'} end
if has < tonumber(r[6] or '0') then return {'lost'} end
local was, other = r[2 + seat], r[5 - seat]
local moved = me .. ' ' .. sid
redis.call('HSET', room, 's' .. seat, moved)
local s = {r[3], r[4]}
s[seat] = moved
forget_seat(node, code, s[1], s[2])
redis.call('SADD', P .. 'seats:' .. me, code)
redis.call('SET', key, moved .. ' ' .. code .. ' ' .. has .. ' ' .. ARGV[5] .. ' ' .. ARGV[6])
redis.call('PEXPIREAT', key, tonumber(r[2]) + 60000)
if other and seat_node(other) ~= me then
  if is_away(was) then
    tell(seat_node(other), 'j ' .. code .. ' ' .. moved)
  else
    tell(seat_node(other), 'r ' .. code .. ' ' .. moved)
  end
end
local away = 0
if is_away(was) then away = 1 end
local out = {'ok', r[1], r[2], other or '', seq, away}
for _, m in ipairs(redis.call('LRANGE', hist, has + 1 - first, -1)) do out[#out + 1] = m end
return out
