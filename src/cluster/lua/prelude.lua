-- Shared by every pairchat script (prepended to each). Keys: room:<code> (a hash: id, exp,
-- s1, s2, seq: the messages ever added, gap (see append.lua), bytes), hist:<code> (a list of
-- message JSON, the last `seq`), seats:<node> (a set of codes), nodes (a set), alive:<node>
-- (a string with a TTL), orphans (a sorted set of "<node> <code>" by when a dead node's
-- seats there are freed),
-- pid:<pid> (where a socket lives: "<node>", or "<node> <sid> <code> <seq> <count> <base>",
-- written by that node; see `Record` in mod.rs); channel to:<node>. A seat is "<node> <sid>",
-- with " a" after it while its member is away (connection state recovery).
-- Scripts read TIME (`late`): Redis before 7 needs this to write after it.
if redis.replicate_commands then redis.replicate_commands() end
local P = 'pairchat:'
local function seat_node(v) return string.match(v, '^(%S+)') end
local function seat_sid(v) return string.match(v, '^%S+ (%S+)') end
local function seat_of(v) return string.match(v, '^(%S+ %S+)') end
local function is_away(v) return string.sub(v, -2) == ' a' end
local function tell(node, msg) redis.call('PUBLISH', P .. 'to:' .. node, msg) end
-- Whether Redis's clock (ms) is past `deadline`: the node that sent the script has given up on
-- it (and answered its client), so it must change nothing.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function late(deadline)
  return now_ms() > tonumber(deadline)
end
-- Takes a node's seats in one room out of seats:<node> when it holds none there any more.
local function forget_seat(node, code, s1, s2)
  for _, v in ipairs({s1 or '', s2 or ''}) do
    if v ~= '' and seat_node(v) == node then return end
  end
  redis.call('SREM', P .. 'seats:' .. node, code)
end
-- Appends a message to a room's history: at most `most` messages and `most_bytes` bytes, the
-- oldest dropped first; the list expires with the room (`keep_until`). Answers the room's
-- `seq`, the message's number.
local function push_history(code, msg, most, most_bytes, keep_until)
  local room, hist = P .. 'room:' .. code, P .. 'hist:' .. code
  local seq = redis.call('HINCRBY', room, 'seq', 1)
  local n = redis.call('RPUSH', hist, msg)
  local bytes = redis.call('HINCRBY', room, 'bytes', #msg)
  while n > most or bytes > most_bytes do
    local old = redis.call('LPOP', hist)
    if not old then break end
    n = n - 1
    bytes = redis.call('HINCRBY', room, 'bytes', -#old)
  end
  redis.call('PEXPIREAT', hist, keep_until)
  return seq
end
