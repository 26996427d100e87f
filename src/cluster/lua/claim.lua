-- ARGV: pid. Where a claimed socket lives: {record, 1 if its node is alive else 0, the seq of
-- the record's room (0 without one)}, or {} without pid:<pid> (see prelude for the record).
local v = redis.call('GET', P .. 'pid:' .. ARGV[1])
if not v then return {} end
local alive = redis.call('EXISTS', P .. 'alive:' .. seat_node(v))
local code = string.match(v, '^%S+ %S+ (%S+)')
local seq = 0
if code then seq = tonumber(redis.call('HGET', P .. 'room:' .. code, 'seq') or '0') end
return {v, alive, seq}
