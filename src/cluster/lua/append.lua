-- ARGV: code, most kept, most bytes kept, keep_until, first, then messages (JSON), oldest first.
-- The history of a room whose members are both on the caller's node (it delivered the messages
-- itself, numbering them from `first`; a loop turn's worth of them come in one call): the
-- room's `seq` after them, or 0 if the room is gone. When `first` does not follow `seq`, the
-- numbers its clients hold do not match Redis's: `gap` notes up to where, and a client that
-- has less cannot be given what it missed (`adopt`). Redis's numbers never go down: the
-- node's win when they are ahead (appends lost with the link), Redis's otherwise.
local code = ARGV[1]
local room = P .. 'room:' .. code
if redis.call('EXISTS', room) == 0 then return 0 end
local r = redis.call('HMGET', room, 'seq', 'gap')
local seq, gap, first = tonumber(r[1] or '0'), tonumber(r[2] or '0'), tonumber(ARGV[5])
if seq + 1 ~= first then
  if first - 1 > seq then
    gap = math.max(gap, first - 1)
    redis.call('HSET', room, 'seq', first - 1)
  else
    gap = math.max(gap, seq + #ARGV - 5)
  end
  redis.call('HSET', room, 'gap', gap)
end
for i = 6, #ARGV do
  seq = push_history(code, ARGV[i], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4])
end
return seq
