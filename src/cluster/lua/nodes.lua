-- No ARGV. The live nodes and the addresses they are reached at: {node, address, …}.
local out = {}
for _, n in ipairs(redis.call('SMEMBERS', P .. 'nodes')) do
  local address = redis.call('GET', P .. 'alive:' .. n)
  if address then
    out[#out + 1] = n
    out[#out + 1] = address
  end
end
return out
