-- ARGV: code, node, sid, id, exp (unix ms), keep_until (unix ms), deadline (Redis ms). 1:
-- created; 0: code taken; -1: late.
local code, node = ARGV[1], ARGV[2]
if late(ARGV[7]) then return -1 end
local room = P .. 'room:' .. code
if redis.call('EXISTS', room) == 1 then return 0 end
redis.call('HSET', room, 'id', ARGV[4], 'exp', ARGV[5], 's1', node .. ' ' .. ARGV[3])
redis.call('PEXPIREAT', room, ARGV[6])
redis.call('SADD', P .. 'seats:' .. node, code)
return 1
