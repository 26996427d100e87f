// Helpers for the end-to-end suite: the real `socket.io-client` against a running pairchat.
//
// Every socket made here is a fresh connection (`forceNew`), never reconnects unless asked to
// (the recovery suites do), and records every event it receives (`socket.received`), so a test
// can check both that the expected events came and that nothing else did.

import assert from 'node:assert/strict';
import { io } from 'socket.io-client';

/** The main server of the suite. */
export const URL = requireEnv('PAIRCHAT_URL');

/** How long to wait for an ack, an event, a connection or an upgrade before failing. */
export const WAIT_MS = 5000;
/** How long to listen for an event that must not come. */
export const QUIET_MS = 250;

/** The client transport configurations every chat scenario runs under. */
export const TRANSPORTS = [
  {
    name: 'default transports (polling, then upgrade to websocket)',
    options: {},
    upgrade: true,
    final: 'websocket',
  },
  { name: "transports: ['websocket']", options: { transports: ['websocket'] }, final: 'websocket' },
  { name: "transports: ['polling']", options: { transports: ['polling'] }, final: 'polling' },
];

/** The environment variable `name`; throws if it is not set. */
export function requireEnv(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set (run the suites with \`cargo test\`)`);
  return value;
}

/**
 * Connects a new socket and resolves once it is connected (and, for the default transports,
 * upgraded to WebSocket unless `waitUpgrade` is false); `io` adds client options (such as
 * reconnection, which is off unless given). For the default transports
 * `socket.upgrading` and `socket.upgraded` resolve at the engine's `upgrading` and `upgrade`
 * events (with the transport name); for the others they are null.
 */
export async function connect(
  url,
  transport,
  { waitUpgrade = true, ms = WAIT_MS, io: extra } = {},
) {
  const socket = io(url, {
    forceNew: true,
    reconnection: false,
    timeout: ms,
    ...transport.options,
    ...extra,
  });
  record(socket);
  // The engine's `upgrading` (WebSocket probe succeeded, polling pausing) and `upgrade` events.
  socket.upgrading = transport.upgrade ? engineEvent(socket, 'upgrading', ms) : null;
  socket.upgraded = transport.upgrade ? engineEvent(socket, 'upgrade', ms) : null;
  // Awaited by whoever cares; never an unhandled rejection.
  socket.upgrading?.catch(() => {});
  socket.upgraded?.catch(() => {});
  try {
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => done(new Error(`no connect to ${url} within ${ms} ms`)), ms);
      const onConnect = () => done();
      const onError = (err) => done(new Error(`connect_error: ${err.message}`, { cause: err }));
      function done(err) {
        clearTimeout(timer);
        socket.off('connect', onConnect);
        socket.off('connect_error', onError);
        if (err) reject(err);
        else resolve();
      }
      socket.on('connect', onConnect);
      socket.on('connect_error', onError);
    });
    if (waitUpgrade && socket.upgraded) await socket.upgraded;
  } catch (err) {
    socket.disconnect();
    throw err;
  }
  return socket;
}

/** Resolves with the transport name at the engine's next `event`; rejects after `ms`. */
function engineEvent(socket, event, ms) {
  const engine = socket.io.engine;
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      finish();
      reject(new Error(`no ${event} within ${ms} ms (transport: ${engine.transport?.name})`));
    }, ms);
    const onEvent = (transport) => {
      finish();
      resolve(transport.name);
    };
    const onClose = (reason) => {
      finish();
      reject(new Error(`engine closed before ${event}: ${reason}`));
    };
    function finish() {
      clearTimeout(timer);
      engine.off(event, onEvent);
      engine.off('close', onClose);
    }
    engine.on(event, onEvent);
    engine.on('close', onClose);
  });
}

/**
 * A connect function bound to a test: every socket it makes is disconnected when the test
 * ends, whatever the outcome.
 */
export function clients(t, url, transport) {
  return async (options) => {
    const socket = await connect(url, transport, options);
    t.after(() => socket.disconnect());
    return socket;
  };
}

/** The transport the socket's engine uses now. */
export function transportName(socket) {
  return socket.io.engine.transport.name;
}

/** Emits with an ack and resolves with the ack's first argument; rejects after `ms`. */
export function ack(socket, event, ...args) {
  return socket.timeout(WAIT_MS).emitWithAck(event, ...args);
}

/**
 * Resolves with the first argument of the oldest `event` on `socket` that no earlier `waitFor`
 * took, waiting for it if none came yet; rejects after `ms`. Events are queued from the moment
 * the socket is made, so an event that arrives before the test starts waiting is not missed.
 */
export function waitFor(socket, event, ms = WAIT_MS) {
  const queued = socket.unclaimed.get(event);
  if (queued?.length) return Promise.resolve(queued.shift());
  return new Promise((resolve, reject) => {
    const waiter = (payload) => {
      clearTimeout(timer);
      resolve(payload);
    };
    const timer = setTimeout(() => {
      const waiters = socket.waiters.get(event);
      waiters.splice(waiters.indexOf(waiter), 1);
      reject(new Error(`socket ${socket.id}: no "${event}" within ${ms} ms`));
    }, ms);
    if (!socket.waiters.has(event)) socket.waiters.set(event, []);
    socket.waiters.get(event).push(waiter);
  });
}

/**
 * Resolves after `ms` if `socket` got no `event` that `waitFor` has not taken; rejects at once
 * if there is one.
 */
export async function expectNone(socket, event, ms = QUIET_MS) {
  const check = () => {
    const queued = socket.unclaimed.get(event);
    if (queued?.length) {
      throw new Error(`socket ${socket.id}: unexpected "${event}" ${JSON.stringify(queued)}`);
    }
  };
  check();
  await sleep(ms);
  check();
}

function record(socket) {
  socket.received = []; // every event, in order: {event, args}
  socket.unclaimed = new Map(); // event -> payloads no waitFor took yet
  socket.waiters = new Map(); // event -> resolvers of pending waitFor calls
  socket.disconnects = []; // reasons
  socket.on('disconnect', (reason) => socket.disconnects.push(reason));
  socket.onAny((event, ...args) => {
    socket.received.push({ event, args });
    const waiter = socket.waiters.get(event)?.shift();
    if (waiter) {
      waiter(args[0]);
    } else {
      if (!socket.unclaimed.has(event)) socket.unclaimed.set(event, []);
      socket.unclaimed.get(event).push(args[0]);
    }
  });
}

export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Resolves once `condition()` holds, checking every 10 ms; rejects after `ms`. */
export async function until(condition, what, ms = WAIT_MS) {
  const deadline = performance.now() + ms;
  while (!condition()) {
    if (performance.now() > deadline) throw new Error(`not within ${ms} ms: ${what}`);
    await sleep(10);
  }
}

/**
 * Waits `quiet` ms for stragglers, then asserts each socket received exactly these events
 * (names, in order) over its whole life.
 */
export async function assertReceived(expected, { quiet = QUIET_MS } = {}) {
  await sleep(quiet);
  for (const [socket, names] of expected) {
    assert.ok(socket.connected, `${socket.id} got disconnected: ${socket.disconnects}`);
    assert.deepEqual(
      socket.received.map((r) => r.event),
      names,
      `events received by ${socket.id}: ${JSON.stringify(socket.received)}`,
    );
  }
}

/** Asserts a `newMessage` payload: exact sender and text, a plausible millisecond timestamp. */
export function assertMessage(message, sender, text, { after = 0, before = Infinity } = {}) {
  const keys = Object.keys(message).sort();
  assert.deepEqual(keys, ['sender', 'text', 'timestamp'], JSON.stringify(message));
  assert.equal(message.sender, sender);
  assert.equal(message.text, text);
  assert.ok(Number.isInteger(message.timestamp), `timestamp ${message.timestamp}`);
  // Same clock as the server; the slack only absorbs a wall-clock step.
  assert.ok(
    message.timestamp >= after - 2000 && message.timestamp <= before + 2000,
    `timestamp ${message.timestamp} outside [${after}, ${before}]`,
  );
}

/** Creates a room from `socket` and checks the code's format. */
export async function createRoom(socket) {
  const reply = await ack(socket, 'createRoom', {});
  assertCode(reply);
  return reply.code;
}

/** Asserts a `createRoom` ack: exactly `{code}`, six digits, 100000–999999. */
export function assertCode(reply) {
  assert.deepEqual(Object.keys(reply), ['code'], JSON.stringify(reply));
  assert.equal(typeof reply.code, 'string');
  assert.match(reply.code, /^[1-9][0-9]{5}$/); // 100000–999999
}

/** A code that no live room has: a room is created, then deleted by its only member leaving. */
export async function deadCode(socket) {
  const code = await createRoom(socket);
  assert.deepEqual(await ack(socket, 'leaveRoom', { code }), { success: true });
  return code;
}
