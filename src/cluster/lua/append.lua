-- ARGV: code, message JSON, most kept, most bytes kept, keep_until. The history of a room whose
-- members are both on the caller's node (it delivered the message itself): 1, or 0 if the room
-- is gone.
local code = ARGV[1]
if redis.call('EXISTS', P .. 'room:' .. code) == 0 then return 0 end
push_history(code, ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5])
return 1
