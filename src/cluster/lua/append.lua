-- ARGV: code, most kept, most bytes kept, keep_until, then messages (JSON), oldest first. The
-- history of a room whose members are both on the caller's node (it delivered the messages
-- itself, numbered as this adds them; a loop turn's worth of them come in one call): 1, or 0
-- if the room is gone.
local code = ARGV[1]
if redis.call('EXISTS', P .. 'room:' .. code) == 0 then return 0 end
for i = 5, #ARGV do
  push_history(code, ARGV[i], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4])
end
return 1
