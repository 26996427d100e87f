// Connection state recovery through the real `socket.io-client`: each recovering client sits
// behind a proxy of its own (proxy.mjs) that the test cuts with a reset or a black hole, never
// telling the client. Run by `cargo test --test recovery_e2e`, which starts the servers and
// sets PAIRCHAT_URL (`--recovery-window 10s`) and PAIRCHAT_SHORT_URL (`--recovery-window
// 1500ms`), both with a 300 ms ping interval and timeout.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import {
  QUIET_MS,
  TRANSPORTS,
  URL,
  ack,
  assertMessage,
  clients,
  createRoom,
  requireEnv,
  sleep,
  until,
  waitFor,
} from './lib.mjs';
import { drop, proxied, reconnection } from './proxy.mjs';

/** The server whose recovery window is short (1500 ms). */
const SHORT_URL = requireEnv('PAIRCHAT_SHORT_URL');
const SHORT_WINDOW_MS = 1500;
const JOINED_EMPTY = { success: true, messages: [] };

/** A room of `a` (recovering, behind its proxy) and `b` (a plain client), created by `a`. */
async function roomOfTwo(t, url, transport) {
  const a = await proxied(t, url, transport);
  const b = await clients(t, url, transport)();
  const code = await createRoom(a);
  assert.deepEqual(await ack(b, 'joinRoom', { code }), JOINED_EMPTY);
  assert.deepEqual(await waitFor(a, 'userJoined'), { userId: b.id });
  return { a, b, code };
}

/** Sends `text` to the room from `socket` and checks the ack. */
async function send(socket, code, text) {
  assert.deepEqual(await ack(socket, 'sendMessage', { code, text }), { success: true }, text);
}

/**
 * Asserts what `socket` received over its whole life (the events `which` picks), after a quiet
 * moment for stragglers: `expected` lists `[event, payload]`, where a `newMessage` payload is
 * `[sender, text]`.
 */
async function assertEvents(socket, expected, which = () => true) {
  await sleep(QUIET_MS);
  const got = socket.received
    .filter(({ event }) => which(event))
    .map(({ event, args }) => [event, args[0]]);
  const shown = JSON.stringify(got.map(([e, p]) => [e, p?.text ?? p]));
  assert.equal(got.length, expected.length, `events received by ${socket.id}: ${shown}`);
  expected.forEach(([event, payload], i) => {
    assert.equal(got[i][0], event, `event ${i} of ${socket.id}: ${shown}`);
    if (event === 'newMessage') assertMessage(got[i][1], ...payload);
    else assert.deepEqual(got[i][1], payload, `event ${i} of ${socket.id}: ${shown}`);
  });
}

/** `[sender, text]` of every `newMessage` in `texts`, for `assertEvents`. */
const messages = (sender, texts) => texts.map((text) => ['newMessage', [sender, text]]);

/** Asserts a reconnection recovered the socket `id` with exactly `replayed` missed events. */
function assertRecovered(back, id, replayed) {
  assert.equal(back.recovered, true, `not recovered: ${JSON.stringify(back)}`);
  assert.equal(back.id, id, 'a recovered socket keeps its id');
  assert.equal(back.replayed.length, replayed, `replayed: ${JSON.stringify(back.replayed)}`);
}

// The three transport suites run side by side; the scenarios inside one run in turn.
describe('connection state recovery', { concurrency: TRANSPORTS.length }, () => {
  for (const transport of TRANSPORTS) {
    describe(transport.name, { concurrency: 1 }, () => {
      for (const mode of ['rst', 'blackhole']) {
        it(`a member cut (${mode}) while its partner sends gets every message once, in order`, async (t) => {
          const { a, b, code } = await roomOfTwo(t, URL, transport);
          const id = a.id;
          const sent = [];
          let sending = true;
          t.after(() => (sending = false));
          const sender = (async () => {
            for (let i = 1; sending; i++) {
              await send(b, code, `b${i}`);
              sent.push(`b${i}`);
              await sleep(10);
            }
          })();
          await until(() => sent.length >= 5, 'five messages before the cut');
          a.proxy.cutAll({ mode });
          assert.deepEqual(await waitFor(b, 'userLeft'), { userId: id });
          const away = sent.length;
          await until(() => sent.length >= away + 5, 'five messages while away');
          a.proxy.heal();
          const back = await reconnection(a, 1);
          assert.deepEqual(await waitFor(b, 'userJoined'), { userId: id });
          const returned = sent.length;
          await until(() => sent.length >= returned + 5, 'five messages after the return');
          sending = false;
          await sender;

          assert.equal(back.recovered, true, `not recovered: ${JSON.stringify(back)}`);
          assert.equal(a.id, id, 'a recovered socket keeps its id');
          assert.ok(back.replayed.length >= 5, `replayed only ${back.replayed.length}`);
          // Still in the room: it can send, and both hear it.
          await send(a, code, 'a is back');
          const all = [...messages(b.id, sent), ...messages(id, ['a is back'])];
          await until(() => b.received.length >= all.length + 2, 'b hears a');
          await assertEvents(a, [['userJoined', { userId: b.id }], ...all]);
          // b hears the leave and the return somewhere among its own messages.
          await assertEvents(b, all, (event) => event === 'newMessage');
          await assertEvents(
            b,
            [
              ['userLeft', { userId: id }],
              ['userJoined', { userId: id }],
            ],
            (event) => event !== 'newMessage',
          );
        });
      }

      it('a second and a third drop recover too (socket.io #4880)', async (t) => {
        const { a, b, code } = await roomOfTwo(t, URL, transport);
        const id = a.id;
        const expected = [['userJoined', { userId: b.id }]];
        for (const [n, mode] of [
          [1, 'rst'],
          [2, 'blackhole'],
          [3, 'rst'],
        ]) {
          a.proxy.cutAll({ mode });
          assert.deepEqual(await waitFor(b, 'userLeft'), { userId: id });
          await send(b, code, `missed ${n}`);
          a.proxy.heal();
          assertRecovered(await reconnection(a, n), id, 1);
          assert.deepEqual(await waitFor(b, 'userJoined'), { userId: id });
          await send(a, code, `back ${n}`);
          expected.push(...messages(b.id, [`missed ${n}`]), ...messages(id, [`back ${n}`]));
          // The next cut finds a with nothing in flight, so that it misses exactly one.
          await until(() => a.received.length === expected.length, `a hears back ${n}`);
        }
        await assertEvents(a, expected);
      });

      it('a member cut before it received any event recovers all of them (socket.io #5538)', async (t) => {
        const a = await proxied(t, URL, transport);
        const b = await clients(t, URL, transport)();
        const id = a.id;
        const code = await createRoom(a);
        a.proxy.cutAll({ mode: 'rst' });
        // a is away once the server sees the reset, or, if a polling client had no poll
        // open to reset, when its pong is missed: within ping interval + timeout.
        await sleep(1000);
        // The room waits for a; b takes the free seat and talks.
        assert.deepEqual(await ack(b, 'joinRoom', { code }), JOINED_EMPTY);
        await send(b, code, 'one');
        await send(b, code, 'two');
        a.proxy.heal();
        assertRecovered(await reconnection(a, 1), id, 3);
        assert.deepEqual(await waitFor(b, 'userJoined'), { userId: id });
        await send(a, code, 'three');
        await assertEvents(a, [
          ['userJoined', { userId: b.id }],
          ...messages(b.id, ['one', 'two']),
          ...messages(id, ['three']),
        ]);
        await assertEvents(b, [
          ...messages(b.id, ['one', 'two']),
          ['userJoined', { userId: id }],
          ...messages(id, ['three']),
        ]);
      });

      it('a quiet room recovers after its last event is older than the window (socket.io #5282)', async (t) => {
        const { a, b, code } = await roomOfTwo(t, SHORT_URL, transport);
        const id = a.id;
        await send(b, code, 'before');
        await waitFor(a, 'newMessage');
        await sleep(SHORT_WINDOW_MS + 500); // nothing at all is sent meanwhile
        await drop(a, 'rst');
        assertRecovered(await reconnection(a, 1), id, 0);
        assert.deepEqual(await waitFor(b, 'userJoined'), { userId: id });
        await send(b, code, 'after');
        await assertEvents(a, [['userJoined', { userId: b.id }], ...messages(b.id, ['before', 'after'])]);
        await assertEvents(b, [
          ...messages(b.id, ['before']),
          ['userLeft', { userId: id }],
          ['userJoined', { userId: id }],
          ...messages(b.id, ['after']),
        ]);
      });

      it('a refreshed page takes the seat; the old socket comes back to roomUnavailable', async (t) => {
        const { a, b, code } = await roomOfTwo(t, URL, transport);
        const id = a.id;
        await send(b, code, 'one');
        await waitFor(a, 'newMessage');
        a.proxy.cutAll({ mode: 'rst' });
        assert.deepEqual(await waitFor(b, 'userLeft'), { userId: id });
        // The refreshed page: a brand-new socket (no pid) with the code.
        const c = await clients(t, URL, transport)();
        const joined = await ack(c, 'joinRoom', { code });
        assert.deepEqual(Object.keys(joined), ['success', 'messages']);
        assert.equal(joined.success, true);
        assert.equal(joined.messages.length, 1);
        assertMessage(joined.messages[0], b.id, 'one');
        assert.deepEqual(await waitFor(b, 'userJoined'), { userId: c.id });
        await send(b, code, 'two');
        a.proxy.heal();
        // It lost its seat when c took it: told so (kept for it), and nothing of the room since.
        assertRecovered(await reconnection(a, 1), id, 1);
        assert.deepEqual(await waitFor(a, 'roomUnavailable'), { code, error: 'Room full' });
        // Its socket is back, its room is not.
        assert.deepEqual(await ack(a, 'sendMessage', { code, text: 'me?' }), {
          error: 'Not a member of this room',
        });
        await assertEvents(a, [
          ['userJoined', { userId: b.id }],
          ...messages(b.id, ['one']),
          ['roomUnavailable', { code, error: 'Room full' }],
        ]);
        await assertEvents(b, [
          ...messages(b.id, ['one']),
          ['userLeft', { userId: id }],
          ['userJoined', { userId: c.id }],
          ...messages(b.id, ['two']),
        ]);
        await assertEvents(c, messages(b.id, ['two']));
      });

      // socket.io-client keeps the last offset it saw across sockets: a socket that got no
      // event yet claims its previous socket's offset, older than anything it was sent.
      it('a fresh socket after disconnect() and connect() recovers a drop before its first event', async (t) => {
        const { a, code } = await roomOfTwo(t, URL, transport);
        a.disconnect();
        a.connect();
        assert.equal((await reconnection(a, 1)).recovered, false);
        const id = a.id;
        const mine = await createRoom(a); // an ack: still no event on this socket
        assert.notEqual(mine, code);
        a.proxy.cutAll({ mode: 'rst' });
        await sleep(1000); // a is away (see the #5538 scenario)
        const c = await clients(t, URL, transport)();
        assert.deepEqual(await ack(c, 'joinRoom', { code: mine }), JOINED_EMPTY);
        await send(c, mine, 'hi');
        a.proxy.heal();
        assertRecovered(await reconnection(a, 2), id, 2);
        assert.deepEqual(await waitFor(c, 'userJoined'), { userId: id });
        await send(a, mine, 'hello');
        await assertEvents(c, [
          ...messages(c.id, ['hi']),
          ['userJoined', { userId: id }],
          ...messages(id, ['hello']),
        ]);
      });

      // A polling client whose request fails posts an Engine.IO close (`1`) on a new request
      // before it reconnects; socket.io takes that for "transport close", which recovers.
      if (transport.final === 'polling') {
        it('a polling client whose POST is reset (it then posts a close) recovers', async (t) => {
          const { a, b, code } = await roomOfTwo(t, URL, transport);
          const id = a.id;
          a.proxy.resetNext('POST'); // the next pong, at the latest
          assertRecovered(await reconnection(a, 1), id, 0);
          assert.equal(a.disconnects[0], 'transport error');
          assert.deepEqual(await waitFor(b, 'userJoined'), { userId: id });
          await send(a, code, 'back');
          await assertEvents(a, [['userJoined', { userId: b.id }], ...messages(id, ['back'])]);
          await assertEvents(b, [
            ['userLeft', { userId: id }],
            ['userJoined', { userId: id }],
            ...messages(id, ['back']),
          ]);
        });
      }

      it('socket.disconnect() then connect() is a fresh socket, not a recovery', async (t) => {
        const { a, b, code } = await roomOfTwo(t, URL, transport);
        const id = a.id;
        a.disconnect();
        assert.deepEqual(await waitFor(b, 'userLeft'), { userId: id });
        a.connect();
        const back = await reconnection(a, 1);
        assert.equal(back.recovered, false);
        assert.notEqual(back.id, id);
        assert.deepEqual(await ack(a, 'sendMessage', { code, text: 'me?' }), {
          error: 'Not a member of this room',
        });
        await assertEvents(a, [['userJoined', { userId: b.id }]]);
        await assertEvents(b, [['userLeft', { userId: id }]]);
      });

      it('a member away longer than the window comes back as a fresh socket', async (t) => {
        const { a, b, code } = await roomOfTwo(t, SHORT_URL, transport);
        const id = a.id;
        a.proxy.cutAll({ mode: 'rst' });
        assert.deepEqual(await waitFor(b, 'userLeft'), { userId: id });
        await sleep(SHORT_WINDOW_MS + 1000);
        a.proxy.heal();
        const back = await reconnection(a, 1);
        assert.equal(back.recovered, false);
        assert.notEqual(back.id, id);
        assert.deepEqual(back.replayed, []);
        assert.deepEqual(await ack(a, 'sendMessage', { code, text: 'me?' }), {
          error: 'Not a member of this room',
        });
        await assertEvents(a, [['userJoined', { userId: b.id }]]);
        await assertEvents(b, [['userLeft', { userId: id }]]);
      });
    });
  }
});
