// The chat as the NestJS backend ran it, on plain socket.io 4.8 in one Node process, everything in
// memory: the gateway's handlers without the framework (which would only add to its cost), so a
// conservative stand-in for the seed's backend in side-by-side benchmarks.
//   npm ci && PORT=3000 ROOM_TTL_MS=1200000 node server.cjs
const http = require('node:http');
const crypto = require('node:crypto');
const { Server } = require('socket.io');

const PORT = Number(process.env.PORT || 3000);
const TTL = Number(process.env.ROOM_TTL_MS || 20 * 60 * 1000);

const srv = http.createServer((req, res) => {
  if (req.url === '/health') {
    res.setHeader('Content-Type', 'application/json');
    res.end(JSON.stringify({ status: 'ok', timestamp: Date.now() }));
    return;
  }
  res.statusCode = 404;
  res.end();
});
const io = new Server(srv, { cors: { origin: '*' } });
// code -> { members: Set<socket id>, messages: [{sender, text, timestamp}], timer }
const rooms = new Map();

function expire(code) {
  io.to(code).emit('roomExpired', {});
  io.in(code).socketsLeave(code);
  rooms.delete(code);
}

io.on('connection', (s) => {
  let current = null;
  s.on('createRoom', (_, cb) => {
    let code;
    do code = String(crypto.randomInt(100000, 1000000)); while (rooms.has(code));
    rooms.set(code, { members: new Set([s.id]), messages: [], timer: setTimeout(expire, TTL, code) });
    current = code;
    s.join(code);
    cb?.({ code });
  });
  s.on('joinRoom', (data, cb) => {
    const room = rooms.get(String(data?.code));
    if (!room) return cb?.({ error: 'Room not found' });
    if (room.members.size >= 2) return cb?.({ error: 'Room full' });
    room.members.add(s.id);
    current = String(data.code);
    s.join(current);
    s.to(current).emit('userJoined', { userId: s.id });
    cb?.({ success: true, messages: room.messages });
  });
  s.on('sendMessage', (data, cb) => {
    const room = rooms.get(String(data?.code));
    if (!room || !room.members.has(s.id)) return cb?.({ error: 'Room not found' });
    const message = { sender: s.id, text: String(data.text), timestamp: Date.now() };
    room.messages.push(message);
    io.to(String(data.code)).emit('newMessage', message);
    cb?.({ success: true });
  });
  s.on('disconnect', () => {
    const room = current && rooms.get(current);
    if (!room) return;
    room.members.delete(s.id);
    s.to(current).emit('userLeft', { userId: s.id });
    if (room.members.size === 0) {
      clearTimeout(room.timer);
      rooms.delete(current);
    }
  });
});

srv.listen(PORT, () => console.log(`socketio-chat: listening on ${PORT}`));
