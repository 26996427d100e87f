// A TCP proxy in front of the server that a test can cut, for the recovery suites: one proxy per
// client, so cutting it drops that client's connections only (every polling request and the
// WebSocket alike), and the client learns of it only the way it would from a real network.
//
//   cutAll({ mode: 'rst' })        resets both ends of every connection at once (RST, no FIN):
//                                  the client and the server see a transport error;
//   cutAll({ mode: 'blackhole' })  keeps every connection open but forwards nothing either way
//                                  (nor a close): only the heartbeat notices, on both sides;
//   heal()                         new connections are forwarded again;
//   retarget(url)                  new connections go to another server (a cluster's node);
//   resetNext('POST')              resets the connection of the next POST instead of passing
//                                  it on (a polling client's request that fails alone).
//
// Between a cut and `heal()` the proxy stays down: new connections are reset or swallowed the
// same way, so a test decides how long its client is away.
//
// `proxied` makes a client behind its own proxy that reconnects quickly and records each
// reconnection (`socket.reconnections`); `drop` cuts it until it notices.

import net from 'node:net';

import { WAIT_MS, connect, sleep, until } from './lib.mjs';

/** Client options of a recovering client: reconnect at once, and give up an attempt soon. */
export const RECONNECT = {
  reconnection: true,
  reconnectionDelay: 100,
  reconnectionDelayMax: 200,
  timeout: 2000,
};

/** How long `drop` keeps the proxy down after the client noticed. */
const NOTICED_MS = 50;
/** How long a black-holed connection is kept before it is dropped for good (quietly). */
const BLACKHOLE_LINGER_MS = 5000;

/** Starts a proxy to `target` (`http://host:port`); resolves once it listens. */
export async function startProxy(target) {
  let { hostname, port } = new globalThis.URL(target);
  const pairs = new Set(); // forwarded: {client, upstream, dead}
  const swallowed = new Set(); // black-holed sockets, either end
  let down = null; // null, 'rst' or 'blackhole'
  let resetMethod = null; // the HTTP method whose next request is reset

  const server = net.createServer((client) => {
    client.on('error', () => {});
    if (down) {
      blackholeOrReset(down, { client, upstream: null, dead: false });
      return;
    }
    const upstream = net.connect({ host: hostname, port: Number(port) });
    upstream.on('error', () => {});
    const pair = { client, upstream, dead: false };
    pairs.add(pair);
    // Forwarded by hand, so a cut can drop bytes instead of passing them on.
    client.on('data', (bytes) => {
      if (pair.dead) return;
      if (resetMethod && bytes.toString('latin1').startsWith(`${resetMethod} `)) {
        resetMethod = null;
        blackholeOrReset('rst', pair);
        return;
      }
      upstream.write(bytes);
    });
    upstream.on('data', (bytes) => pair.dead || client.write(bytes));
    // An orderly end or a close on one side goes to the other, unless the pair was cut.
    client.on('end', () => pair.dead || upstream.end());
    upstream.on('end', () => pair.dead || client.end());
    client.on('close', () => forget(pair, upstream));
    upstream.on('close', () => forget(pair, client));
  });

  function forget(pair, other) {
    if (pair.dead) return;
    pairs.delete(pair);
    other.destroy();
  }

  function blackholeOrReset(mode, pair) {
    pair.dead = true;
    pairs.delete(pair);
    const ends = [pair.client, pair.upstream].filter(Boolean);
    if (mode === 'rst') {
      for (const end of ends) end.resetAndDestroy();
      return;
    }
    // Read and drop whatever comes, so neither side is held back by a full window.
    for (const end of ends) {
      swallowed.add(end);
      end.on('data', () => {});
      end.on('close', () => swallowed.delete(end));
    }
    setTimeout(() => ends.forEach((end) => end.destroy()), BLACKHOLE_LINGER_MS).unref();
  }

  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    cutAll({ mode }) {
      if (mode !== 'rst' && mode !== 'blackhole') throw new Error(`unknown cut mode ${mode}`);
      down = mode;
      for (const pair of [...pairs]) blackholeOrReset(mode, pair);
    },
    heal() {
      down = null;
    },
    /** New connections go to `url` from now on (another node of a cluster). */
    retarget(url) {
      ({ hostname, port } = new globalThis.URL(url));
    },
    /** Resets the connection of the next request with this HTTP `method`, unforwarded. */
    resetNext(method) {
      resetMethod = method;
    },
    /** Stops listening and drops every connection. */
    close() {
      for (const pair of pairs) {
        pair.dead = true;
        pair.client.destroy();
        pair.upstream.destroy();
      }
      pairs.clear();
      for (const end of swallowed) end.destroy();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

/**
 * Connects a client to `target` through a proxy of its own (`socket.proxy`); both are closed
 * when the test `t` ends. Every later connect is recorded in `socket.reconnections`:
 * `{id, recovered, replayed, downAt, attemptAt, openAt, at}`, where `replayed` are the events
 * received between the disconnect and the connect (those the server sent before its CONNECT
 * reply) and the times are `performance.now()` at the disconnect, the Manager's last
 * `reconnect_attempt`, its `open` and the socket's `connect`.
 */
export async function proxied(t, target, transport, options) {
  const proxy = await startProxy(target);
  t.after(() => proxy.close());
  const socket = await connect(proxy.url, transport, {
    ...options,
    io: { ...RECONNECT, ...options?.io },
  });
  t.after(() => socket.disconnect());
  socket.proxy = proxy;
  socket.reconnections = [];
  let down = null; // {downAt, from, attemptAt, openAt} while disconnected
  socket.on('disconnect', () => {
    down = { downAt: performance.now(), from: socket.received.length };
  });
  socket.io.on('reconnect_attempt', () => down && (down.attemptAt = performance.now()));
  socket.io.on('open', () => {
    if (!down) return;
    down.openAt = performance.now();
    // What the CONNECT just sent claims (the client's own fields, for diagnostics only).
    down.claim = { pid: socket._pid, offset: socket._lastOffset };
  });
  socket.on('connect', () => {
    const { from = socket.received.length, ...times } = down ?? {};
    socket.reconnections.push({
      id: socket.id,
      recovered: socket.recovered,
      replayed: socket.received.slice(from),
      ...times,
      at: performance.now(),
    });
    down = null;
  });
  return socket;
}

/**
 * Cuts a `proxied` socket with `mode` and heals its proxy once the client has noticed (its
 * `disconnect` event), `holdMs` have passed and a little more: what the client sends as it
 * notices (a polling client posts an Engine.IO close) is lost, as it would be in an outage. A
 * polling client between two requests has no connection to cut: it notices at its next
 * request, which finds the proxy still down.
 */
export async function drop(socket, mode, { holdMs = 0, ms = WAIT_MS } = {}) {
  const seen = socket.disconnects.length;
  socket.proxy.cutAll({ mode });
  const held = sleep(holdMs);
  await until(() => socket.disconnects.length > seen, `${socket.id} notices the ${mode} cut`, ms);
  await held;
  await sleep(NOTICED_MS);
  socket.proxy.heal();
}

/** Resolves with the `n`th reconnection of a `proxied` socket (from 1), waiting up to `ms`. */
export async function reconnection(socket, n, ms = WAIT_MS) {
  await until(() => socket.reconnections.length >= n, `reconnection ${n} of ${socket.id}`, ms);
  return socket.reconnections[n - 1];
}
