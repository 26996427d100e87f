// The pairchat browser example: create or join a room, chat, leave. Everything the server
// answers comes back as an ack (`emitWithAck`, with a timeout) or as one of four events
// (newMessage, userJoined, userLeft, roomExpired); see "Frontend guide" in the README.
'use strict';

/** socket.io-client 4.8.1 from its official CDN, and the hash that pins it (SRI). */
const DEFAULT_CLIENT = 'https://cdn.socket.io/4.8.1/socket.io.min.js';
const DEFAULT_CLIENT_SRI = 'sha384-mkQ3/7FUtcGyoppY6bz/PORYoGqOl7/aSUMn2ymDOJcapfS6PHqxhRTMh1RR0Q6+';
const DEFAULT_SERVER = 'http://localhost:3000';
/** How long to wait for an ack before telling the user the server did not answer. */
const ACK_TIMEOUT_MS = 5000;

const params = new URLSearchParams(location.search);
const SERVER = params.get('server') || DEFAULT_SERVER;
const CLIENT = sameOriginPath(params.get('client')) || DEFAULT_CLIENT;

const $ = (id) => document.getElementById(id);
const ui = {
  connection: $('connection'),
  lobby: $('lobby'),
  create: $('create'),
  joinForm: $('join-form'),
  joinCode: $('join-code'),
  join: $('join'),
  chat: $('chat'),
  roomCode: $('room-code'),
  copy: $('copy'),
  leave: $('leave'),
  messages: $('messages'),
  sendForm: $('send-form'),
  message: $('message'),
  send: $('send'),
  status: $('status'),
  error: $('error'),
};

/** The room this page is in, `{code, expired}`, or `null` in the lobby. */
let room = null;
/** The one socket.io-client socket (created once the bundle has loaded). */
let socket = null;
/** Every id this page's socket has had: a reconnect gets a new one, and the history a rejoin
 *  returns still names the old ones as senders. */
const myIds = new Set();

loadClient()
  .then(start)
  .catch((err) => {
    setConnection('error', 'Offline');
    showError(err.message);
  });

/** `value` resolved if it is a path on this page's own origin (`/vendor/socket.io.min.js`),
 *  else null (with a warning): a crafted link must not make a hosted copy of this page run a
 *  script from anywhere else. Past the leading-slash rule, `/\host/x.js` and `/<tab>/host/x.js`
 *  still name another host (URLs read `\` as `/` and drop tabs): the resolved origin decides. */
function sameOriginPath(value) {
  if (!value) return null;
  let url = null;
  if (value.startsWith('/') && !value.startsWith('//')) {
    try {
      url = new URL(value, location.href);
    } catch {
      // Not a URL at all.
    }
  }
  if (url?.origin === location.origin) return url.href;
  console.warn(`?client=${value} ignored: only a path on this page's origin is loaded`);
  return null;
}

/** Adds the socket.io-client bundle (a global `io`) to the page. */
function loadClient() {
  return new Promise((resolve, reject) => {
    const script = document.createElement('script');
    script.src = CLIENT;
    if (CLIENT === DEFAULT_CLIENT) {
      script.integrity = DEFAULT_CLIENT_SRI;
      script.crossOrigin = 'anonymous';
    }
    script.onload = () => resolve();
    script.onerror = () => reject(new Error(`Could not load socket.io-client from ${CLIENT}`));
    document.head.append(script);
  });
}

function start() {
  // Default options: long-polling first, then the upgrade to WebSocket.
  socket = io(SERVER);

  socket.on('connect', () => {
    myIds.add(socket.id);
    const engine = socket.io.engine;
    setConnection('online', `Connected · ${engine.transport.name}`);
    engine.once('upgrade', (transport) => setConnection('online', `Connected · ${transport.name}`));
    setBusy(false);
    if (!room || room.expired) return;
    if (socket.recovered) {
      // Back within the server's recovery window: same id, same room, and what we missed
      // arrived as events before this.
      setStatus('Reconnected.', 'good');
    } else {
      // A new socket id: take our place in the room back (the server keeps the history while
      // the partner stays).
      rejoin(room.code);
    }
  });
  socket.on('connect_error', () => {
    setConnection('error', 'Cannot reach the server');
    setStatus(`No answer from ${SERVER}. Retrying…`);
  });
  socket.on('disconnect', () => {
    setConnection('error', 'Disconnected');
    setBusy(true);
    setStatus('Connection lost. Reconnecting…');
  });

  socket.on('newMessage', (message) => {
    if (room) addMessage(message);
  });
  socket.on('userJoined', () => setStatus('Your partner joined. Say hello!', 'good'));
  socket.on('userLeft', () => setStatus('Your partner left the chat.', 'warn'));
  socket.on('roomUnavailable', ({ code }) => {
    if (!room || room.code !== code) return;
    leaveView();
    showError(`Someone took your place in room ${code} while you were away.`);
  });
  socket.on('roomExpired', () => {
    if (!room) return;
    room.expired = true;
    ui.message.disabled = ui.send.disabled = true;
    ui.leave.textContent = 'Back';
    setStatus('This room has expired; its messages are gone.', 'warn');
  });

  ui.create.addEventListener('click', createRoom);
  ui.joinForm.addEventListener('submit', (event) => {
    event.preventDefault();
    joinRoom(ui.joinCode.value.trim());
  });
  ui.sendForm.addEventListener('submit', (event) => {
    event.preventDefault();
    sendMessage();
  });
  ui.leave.addEventListener('click', leaveRoom);
  ui.copy.addEventListener('click', copyCode);
}

/** Emits `event` and resolves with its ack; rejects with a readable error on a timeout or
 *  an `{error}` answer. */
async function request(event, payload) {
  let reply;
  try {
    reply = await socket.timeout(ACK_TIMEOUT_MS).emitWithAck(event, payload);
  } catch {
    throw new Error('The server did not answer in time.');
  }
  if (reply && reply.error) throw new Error(reply.error);
  return reply;
}

async function createRoom() {
  await act(async () => {
    const { code } = await request('createRoom', {});
    enterRoom(code, []);
    setStatus('Waiting for your partner. Share the code above.');
  });
}

async function joinRoom(code) {
  await act(async () => {
    const { messages } = await request('joinRoom', { code });
    enterRoom(code, messages);
    setStatus('You joined the chat.', 'good');
  });
}

async function rejoin(code) {
  try {
    const { messages } = await request('joinRoom', { code });
    enterRoom(code, messages);
    setStatus('Reconnected.', 'good');
  } catch (err) {
    leaveView();
    showError(`Could not get back into room ${code}: ${err.message}`);
  }
}

async function sendMessage() {
  const text = ui.message.value;
  if (!room || !text.trim()) return;
  await act(async () => {
    await request('sendMessage', { code: room.code, text });
    ui.message.value = '';
  });
  ui.message.focus();
}

async function leaveRoom() {
  if (!room) return;
  const { code, expired } = room;
  if (!expired && socket.connected) {
    // Leaving is best effort: the page goes back to the lobby whatever the answer.
    await act(() => request('leaveRoom', { code }));
  }
  leaveView();
  setStatus(expired ? '' : `You left room ${code}.`);
}

async function copyCode() {
  if (!room) return;
  try {
    await navigator.clipboard.writeText(room.code);
  } catch {
    // No Clipboard API outside secure contexts: select the code so Ctrl+C copies it.
    getSelection().selectAllChildren(ui.roomCode);
  }
  ui.copy.textContent = 'Copied';
  setTimeout(() => (ui.copy.textContent = 'Copy code'), 1500);
}

/** Runs a user action with the buttons disabled, showing its error if it fails. */
async function act(action) {
  clearError();
  setBusy(true);
  try {
    await action();
  } catch (err) {
    showError(err.message);
  } finally {
    setBusy(!socket.connected);
  }
}

function enterRoom(code, history) {
  room = { code: String(code), expired: false };
  ui.roomCode.textContent = room.code;
  ui.messages.replaceChildren();
  history.forEach(addMessage);
  ui.message.disabled = ui.send.disabled = false;
  ui.leave.textContent = 'Leave';
  ui.lobby.hidden = true;
  ui.chat.hidden = false;
  ui.message.focus();
}

function leaveView() {
  room = null;
  ui.chat.hidden = true;
  ui.lobby.hidden = false;
  ui.joinCode.value = '';
}

function addMessage({ sender, text, timestamp }) {
  const mine = myIds.has(sender);
  const item = document.createElement('li');
  item.className = mine ? 'mine' : 'theirs';
  item.dataset.testid = 'message';
  item.dataset.from = mine ? 'me' : 'partner';
  const body = document.createElement('p');
  body.textContent = text;
  const time = document.createElement('time');
  const at = new Date(timestamp);
  time.dateTime = at.toISOString();
  time.textContent = at.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  item.append(body, time);
  ui.messages.append(item);
  ui.messages.scrollTop = ui.messages.scrollHeight;
}

function setBusy(busy) {
  for (const el of [ui.create, ui.join, ui.send, ui.leave]) el.disabled = busy;
  if (room?.expired) ui.send.disabled = true;
}

function setConnection(state, text) {
  ui.connection.dataset.state = state;
  ui.connection.textContent = text;
}

function setStatus(text, tone = '') {
  ui.status.textContent = text;
  ui.status.dataset.tone = tone;
}

function showError(text) {
  ui.error.textContent = text;
  ui.error.hidden = false;
}

function clearError() {
  ui.error.textContent = '';
  ui.error.hidden = true;
}
