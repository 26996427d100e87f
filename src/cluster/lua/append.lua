-- ARGV: code, message JSON, most kept, keep_until. The history of a room whose members are
-- both on the caller's node (it delivered the message itself): 1, or 0 if the room is gone.
local code = ARGV[1]
if redis.call('EXISTS', P .. 'room:' .. code) == 0 then return 0 end
local hist = P .. 'hist:' .. code
redis.call('RPUSH', hist, ARGV[2])
redis.call('LTRIM', hist, -tonumber(ARGV[3]), -1)
redis.call('PEXPIREAT', hist, ARGV[4])
return 1
