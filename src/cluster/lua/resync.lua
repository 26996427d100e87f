-- ARGV: node, node_ttl (ms), then for each member this node has: code, seat ("<sid>" or
-- "<sid> a"), id, exp, keep_until, and the partner's seat on another node as this node last
-- heard of it ("<node> <sid>[ a]", or ''), and the room's messages as this node numbered them
-- (`seq`). Run when the node's link to Redis is (re)made,
-- before anything else: Redis then holds exactly this node's seats.
-- - A seat Redis has for this node that it no longer has is freed (as 'gone').
-- - A member's room that is missing (Redis restarted empty) is made again with the same id and
--   expiry, with the partner's seat as this node knew it; a partner's node that Redis does not
--   know is registered with a short alive key, so the reaper frees its seat if it does not
--   come back (it may have died while Redis was away). But a partner's node that has synced
--   already (`synced:<node>`) would have made the room again itself if it still had the
--   partner: that partner is gone.
-- - A seat taken meanwhile (the node was reaped, and the seat given away) is lost; one the
--   reaper marked away is this node's again (its partner's node is told 'j').
-- - A room numbered lower than this node numbered it (appends lost with the link) takes this
--   node's numbers, with a `gap` (see append.lua).
-- Answers {lost, gone, seqs}: this node's members whose seat is lost, and partners that are
-- gone, each as "<code> <sid>", and each room's `seq` now, as "<code> <seq>".
local node, ttl = ARGV[1], ARGV[2]
local FIELDS = 7
local mine = {}
local n = (#ARGV - 2) / FIELDS
local function arg(k, f) return ARGV[2 + k * FIELDS + f] end
for k = 0, n - 1 do
  local code = arg(k, 1)
  mine[code] = mine[code] or {}
  mine[code][#mine[code] + 1] = k
end
local seats = P .. 'seats:' .. node
redis.call('SET', P .. 'synced:' .. node, '1')
-- The rooms of its seats: those it is known to hold, and those the reaper left it, away (it
-- was taken for dead).
local held = redis.call('SMEMBERS', seats)
for _, m in ipairs(redis.call('ZRANGE', P .. 'orphans', 0, -1)) do
  local n, code = string.match(m, '^(%S+) (%S+)$')
  if n == node then
    held[#held + 1] = code
    redis.call('ZREM', P .. 'orphans', m)
  end
end
-- Seats Redis has for this node that it does not have any more.
for _, code in ipairs(held) do
  local room = P .. 'room:' .. code
  local r = redis.call('HMGET', room, 's1', 's2')
  for i = 1, 2 do
    if r[i] and seat_node(r[i]) == node then
      local keep = false
      for _, k in ipairs(mine[code] or {}) do
        if seat_sid(r[i]) == string.match(arg(k, 2), '^(%S+)') then keep = true end
      end
      if not keep then
        local other, freed = r[3 - i], r[i]
        r[i] = nil
        if not other then
          redis.call('DEL', room, P .. 'hist:' .. code)
        else
          redis.call('HDEL', room, 's' .. i)
          if seat_node(other) ~= node and not is_away(freed) then
            tell(seat_node(other), 'l ' .. code .. ' ' .. seat_of(freed))
          end
        end
      end
    end
  end
  if not mine[code] then redis.call('SREM', seats, code) end
end
local lost, gone, seqs = {}, {}, {}
for k = 0, n - 1 do
  local code, seat, id, partner = arg(k, 1), arg(k, 2), arg(k, 3), arg(k, 6)
  local sid = string.match(seat, '^(%S+)')
  local room = P .. 'room:' .. code
  local r = redis.call('HMGET', room, 'id', 's1', 's2')
  local value = node .. ' ' .. seat
  if not r[1] then
    redis.call('HSET', room, 'id', id, 'exp', arg(k, 4), 's1', value, 'seq', arg(k, 7))
    redis.call('PEXPIREAT', room, arg(k, 5))
    redis.call('SADD', seats, code)
    if partner ~= '' and redis.call('EXISTS', P .. 'synced:' .. seat_node(partner)) == 1 then
      gone[#gone + 1] = code .. ' ' .. seat_sid(partner)
    elseif partner ~= '' then
      local pnode = seat_node(partner)
      redis.call('HSET', room, 's2', partner)
      redis.call('SADD', P .. 'seats:' .. pnode, code)
      if redis.call('SADD', P .. 'nodes', pnode) == 1 then
        redis.call('SET', P .. 'alive:' .. pnode, '', 'PX', ttl, 'NX')
      end
    end
    seqs[#seqs + 1] = code .. ' ' .. arg(k, 7)
  elseif r[1] ~= id then
    lost[#lost + 1] = code .. ' ' .. sid
  else
    local s = {r[2], r[3]}
    local held = false
    for i = 1, 2 do
      if s[i] and seat_of(s[i]) == node .. ' ' .. sid then
        held = true
        redis.call('HSET', room, 's' .. i, value)
        redis.call('SADD', seats, code)
        local other = s[3 - i]
        if is_away(s[i]) and not is_away(value) and other and seat_node(other) ~= node then
          tell(seat_node(other), 'j ' .. code .. ' ' .. node .. ' ' .. sid)
        end
      end
    end
    local seq, mine = tonumber(redis.call('HGET', room, 'seq') or '0'), tonumber(arg(k, 7))
    if mine > seq then
      seq = mine
      redis.call('HSET', room, 'seq', seq, 'gap', seq)
    end
    seqs[#seqs + 1] = code .. ' ' .. seq
    if not held then
      local free = nil
      for i = 1, 2 do
        if not s[i] and not free then free = i end
      end
      if free then
        redis.call('HSET', room, 's' .. free, value)
        redis.call('SADD', seats, code)
        local other = s[3 - free]
        if other and seat_node(other) ~= node and not is_away(value) then
          tell(seat_node(other), 'j ' .. code .. ' ' .. node .. ' ' .. sid)
        end
      else
        lost[#lost + 1] = code .. ' ' .. sid
      end
    end
  end
end
return {lost, gone, seqs}
