-- ARGV: code, node, sid, message JSON, most kept, most bytes kept, keep_until, deadline. The
-- message's number in the room (`seq`), or 'nf' (no such room), 'nm' (not a member) or 'late'.
-- Appends to the history and tells each other seat's node 'm <code> <seq> <json>' once.
local code, node, sid, msg = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if late(ARGV[8]) then return 'late' end
local room = P .. 'room:' .. code
local r = redis.call('HMGET', room, 's1', 's2')
local me = node .. ' ' .. sid
if not ((r[1] and seat_of(r[1]) == me) or (r[2] and seat_of(r[2]) == me)) then
  if redis.call('EXISTS', room) == 0 then return 'nf' end
  return 'nm'
end
local seq = push_history(code, msg, tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7])
local told = {[node] = true}
for i = 1, 2 do
  if r[i] then
    local n = seat_node(r[i])
    if not told[n] then
      told[n] = true
      tell(n, 'm ' .. code .. ' ' .. seq .. ' ' .. msg)
    end
  end
end
return seq
