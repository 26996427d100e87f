-- ARGV: pid, node. Deletes pid:<pid> if it names that node (a socket moved there is gone, or
-- never came): a later move of the socket elsewhere is kept.
local key = P .. 'pid:' .. ARGV[1]
local v = redis.call('GET', key)
if v and seat_node(v) == ARGV[2] then redis.call('DEL', key) end
return 'ok'
