-- ARGV: code, most kept, most bytes kept, keep_until, first, then messages (JSON), oldest first.
-- The history of a room whose members are both on the caller's node (it delivered the messages
-- itself, numbering them from `first`; a loop turn's worth of them come in one call): 1, or 0
-- if the room is gone. Numbers that do not follow the room's `seq` (appends lost with a link)
-- win, and `gap` notes that the history up to there is not numbered right: a client that has
-- less than that cannot be given what it missed (`adopt`).
local code = ARGV[1]
local room = P .. 'room:' .. code
if redis.call('EXISTS', room) == 0 then return 0 end
local first = tonumber(ARGV[5])
if tonumber(redis.call('HGET', room, 'seq') or '0') + 1 ~= first then
  redis.call('HSET', room, 'seq', first - 1, 'gap', first - 1)
end
for i = 6, #ARGV do
  push_history(code, ARGV[i], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4])
end
return 1
