// Clients besides socket.io-client 4.x with its default parser, against pairchat with its default
// `--parser auto`, under the three transport settings:
// - socket.io-msgpack-parser 3.0.2 with the real `socket.io-client` 4.8: a msgpack client and a
//   JSON client share a room (each session's first packet says which parser it speaks, and a
//   room's events reach each in its own), and a msgpack client recovers its socket and what it
//   missed (offsets travel in msgpack events). A msgpack client speaks nothing but msgpack: had
//   the server sent it one JSON text packet, its decoder would have thrown.
// - socket.io-client 3.1.3 (Engine.IO v4, Socket.IO v5 as 4.x): the chat with a 4.x client.
// - socket.io-client 2.5.0 (Engine.IO v3, Socket.IO v4; the server runs with --allow-eio3): the
//   whole chat contract with a 4.x client in the room, room expiry included.
// Run by `cargo test --test e2e` against servers it starts: PAIRCHAT_URL, and
// PAIRCHAT_EXPIRY_URL (`--room-ttl 1500ms`).

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import io2 from 'socket.io-client-2';
import { io as io3 } from 'socket.io-client-3';
import parser from 'socket.io-msgpack-parser';

import {
  TRANSPORTS,
  URL,
  WAIT_MS,
  ack,
  assertMessage,
  clients,
  createRoom,
  deadCode,
  requireEnv,
  sleep,
  transportName,
  until,
  waitFor,
} from './lib.mjs';
import { proxied, reconnection } from './proxy.mjs';

const MSGPACK = { io: { parser } };

describe('socket.io-msgpack-parser', { concurrency: TRANSPORTS.length }, () => {
  for (const transport of TRANSPORTS) {
    describe(transport.name, { concurrency: 1 }, () => {
      it('a msgpack client and a JSON client chat in one room', async (t) => {
        const connect = clients(t, URL, transport);
        const alice = await connect(MSGPACK);
        const bob = await connect();
        const code = await createRoom(alice);
        assert.deepEqual(await ack(bob, 'joinRoom', { code }), { success: true, messages: [] });
        assert.deepEqual(await waitFor(alice, 'userJoined'), { userId: bob.id });

        const text = 'hé 🎉 "quoted" \\ 1.5';
        const sent = [waitFor(alice, 'newMessage'), waitFor(bob, 'newMessage')];
        assert.deepEqual(await ack(alice, 'sendMessage', { code, text }), { success: true });
        const [mine, theirs] = await Promise.all(sent);
        assertMessage(mine, alice.id, text);
        assert.deepEqual(theirs, mine, 'the same message in both parsers');

        const back = [waitFor(alice, 'newMessage'), waitFor(bob, 'newMessage')];
        assert.deepEqual(await ack(bob, 'sendMessage', { code, text: 'reply' }), {
          success: true,
        });
        const [a, b] = await Promise.all(back);
        assertMessage(b, bob.id, 'reply');
        assert.deepEqual(a, b);

        // The history reaches a msgpack joiner as it reaches a JSON one.
        const carol = await connect(MSGPACK);
        assert.deepEqual(await ack(carol, 'joinRoom', { code }), { error: 'Room full' });
        const dave = await connect(MSGPACK);
        const other = await createRoom(dave);
        assert.deepEqual(await ack(carol, 'joinRoom', { code: other }), {
          success: true,
          messages: [],
        });
        assert.deepEqual(await ack(carol, 'sendMessage', { code: '12', text: 'x' }), {
          error: 'Invalid room code',
        });

        const bobId = bob.id;
        bob.disconnect();
        assert.deepEqual(await waitFor(alice, 'userLeft'), { userId: bobId });
      });

      it('a msgpack client recovers its socket and what it missed', async (t) => {
        const alice = await proxied(t, URL, transport, MSGPACK);
        const bob = await clients(t, URL, transport)();
        const code = await createRoom(alice);
        assert.deepEqual(await ack(bob, 'joinRoom', { code }), { success: true, messages: [] });
        await waitFor(alice, 'userJoined');
        const id = alice.id;

        // Cut until Bob has said two things.
        alice.proxy.cutAll({ mode: 'rst' });
        assert.deepEqual(await waitFor(bob, 'userLeft'), { userId: id });
        for (const text of ['m1', 'm2']) {
          assert.deepEqual(await ack(bob, 'sendMessage', { code, text }), { success: true });
          assertMessage(await waitFor(bob, 'newMessage'), bob.id, text);
        }
        alice.proxy.heal();
        const back = await reconnection(alice, 1);
        assert.equal(back.recovered, true, `not recovered: ${JSON.stringify(back)}`);
        assert.equal(alice.id, id);
        const replayed = back.replayed.filter((r) => r.event === 'newMessage');
        assert.deepEqual(
          replayed.map((r) => r.args[0].text),
          ['m1', 'm2'],
        );
        assert.deepEqual(await waitFor(bob, 'userJoined'), { userId: id });
        await until(() => alice.connected, 'alice connected');
        await sleep(50);
        assert.deepEqual(await ack(alice, 'sendMessage', { code, text: 'back' }), {
          success: true,
        });
        assertMessage(await waitFor(bob, 'newMessage'), id, 'back');
      });
    });
  }
});

/** Connects a socket.io-client 3.x socket with the transport's options. */
function connect3(t, transport) {
  const socket = io3(URL, { forceNew: true, reconnection: false, ...transport.options });
  t.after(() => socket.disconnect());
  return new Promise((resolve, reject) => {
    socket.once('connect', () => resolve(socket));
    socket.once('connect_error', reject);
  });
}

describe('socket.io-client 3.x', { concurrency: TRANSPORTS.length }, () => {
  for (const transport of TRANSPORTS) {
    it(`chats with a 4.x client (${transport.name})`, async (t) => {
      const old = await connect3(t, transport);
      const bob = await clients(t, URL, transport)();
      // socket.io-client 3.x has no emitWithAck.
      const call = (event, arg) => new Promise((resolve) => old.emit(event, arg, resolve));
      const { code } = await call('createRoom', {});
      assert.match(code, /^[1-9][0-9]{5}$/);
      const joined = new Promise((resolve) => old.once('userJoined', resolve));
      assert.deepEqual(await ack(bob, 'joinRoom', { code }), { success: true, messages: [] });
      assert.deepEqual(await joined, { userId: bob.id });
      const got = new Promise((resolve) => old.once('newMessage', resolve));
      assert.deepEqual(await ack(bob, 'sendMessage', { code, text: 'hi' }), { success: true });
      assertMessage(await got, bob.id, 'hi');
      assertMessage(await waitFor(bob, 'newMessage'), bob.id, 'hi');
      const mine = waitFor(bob, 'newMessage');
      assert.deepEqual(await call('sendMessage', { code, text: 'hello' }), { success: true });
      assertMessage(await mine, old.id, 'hello');
    });
  }
});

const EXPIRY_URL = requireEnv('PAIRCHAT_EXPIRY_URL');

/**
 * Connects a socket.io-client 2.x socket with the transport's options; resolves once it is
 * connected and on its final transport (upgraded, for the default transports).
 */
async function connect2(t, url, transport) {
  const socket = io2(url, { forceNew: true, reconnection: false, ...transport.options });
  t.after(() => socket.close());
  await new Promise((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('connect_error', reject);
  });
  await until(() => transportName(socket) === transport.final, `on ${transport.final}`);
  return socket;
}

/** Emits with an ack (2.x has no emitWithAck); resolves with the ack's arguments. */
function call2(socket, event, arg) {
  return within(new Promise((resolve) => socket.emit(event, arg, (...args) => resolve(args))));
}

/**
 * Resolves with the arguments of the next `event` on a 2.x socket: the payload, and (the
 * server keeping events for recovery, as socket.io does) the event's offset, a string.
 */
function next2(socket, event) {
  return within(new Promise((resolve) => socket.once(event, (...args) => resolve(args))));
}

function within(promise) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`nothing within ${WAIT_MS} ms`)), WAIT_MS);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** A 2.x event's payload, its offset checked. */
function payload([value, offset, ...more]) {
  assert.equal(typeof offset, 'string', 'an offset after the payload');
  assert.deepEqual(more, []);
  return value;
}

describe('socket.io-client 2.x (Engine.IO v3)', { concurrency: TRANSPORTS.length }, () => {
  for (const transport of TRANSPORTS) {
    describe(transport.name, { concurrency: 1 }, () => {
      it('the whole chat with a 4.x client in the room', async (t) => {
        const old = await connect2(t, URL, transport);
        // Its socket id is its Engine.IO session id.
        assert.equal(old.id, old.io.engine.id);
        const connect = clients(t, URL, transport);
        const bob = await connect();
        const [created] = await call2(old, 'createRoom', {});
        assert.match(created.code, /^[1-9][0-9]{5}$/);
        const code = created.code;

        const joined = next2(old, 'userJoined');
        assert.deepEqual(await ack(bob, 'joinRoom', { code }), { success: true, messages: [] });
        assert.deepEqual(payload(await joined), { userId: bob.id });

        const got = next2(old, 'newMessage');
        assert.deepEqual(await ack(bob, 'sendMessage', { code, text: 'hi 🎉' }), {
          success: true,
        });
        assertMessage(payload(await got), bob.id, 'hi 🎉');
        assertMessage(await waitFor(bob, 'newMessage'), bob.id, 'hi 🎉');

        const mine = next2(old, 'newMessage');
        assert.deepEqual(await call2(old, 'sendMessage', { code, text: 'é "q" \\' }), [
          { success: true },
        ]);
        assertMessage(payload(await mine), old.id, 'é "q" \\');
        assertMessage(await waitFor(bob, 'newMessage'), old.id, 'é "q" \\');

        // Errors as acks.
        const carol = await connect2(t, URL, transport);
        assert.deepEqual(await call2(carol, 'joinRoom', { code }), [{ error: 'Room full' }]);
        const dave = await connect();
        const dead = await deadCode(dave);
        assert.deepEqual(await call2(carol, 'joinRoom', { code: dead }), [
          { error: 'Room not found' },
        ]);
        assert.deepEqual(await call2(carol, 'sendMessage', { code: '12', text: 'x' }), [
          { error: 'Invalid room code' },
        ]);

        // The history, oldest first, reaches a 2.x joiner.
        const other = await createRoom(dave);
        for (const text of ['one', 'two']) {
          assert.deepEqual(await ack(dave, 'sendMessage', { code: other, text }), {
            success: true,
          });
        }
        const [history] = await call2(carol, 'joinRoom', { code: other });
        assert.equal(history.success, true);
        assert.deepEqual(
          history.messages.map((m) => [m.sender, m.text]),
          [
            [dave.id, 'one'],
            [dave.id, 'two'],
          ],
        );
        assert.deepEqual(await waitFor(dave, 'userJoined'), { userId: carol.id });

        // Leaving, both ways.
        const oldId = old.id;
        old.close();
        assert.deepEqual(await waitFor(bob, 'userLeft'), { userId: oldId });
        const left = next2(carol, 'userLeft');
        const daveId = dave.id;
        dave.disconnect();
        assert.deepEqual(payload(await left), { userId: daveId });
      });

      it('roomExpired reaches a 2.x member', async (t) => {
        const old = await connect2(t, EXPIRY_URL, transport);
        const bob = await clients(t, EXPIRY_URL, transport)();
        const [{ code }] = await call2(old, 'createRoom', {});
        const expired = next2(old, 'roomExpired');
        assert.deepEqual(await ack(bob, 'joinRoom', { code }), { success: true, messages: [] });
        assert.deepEqual(payload(await expired), {});
        assert.deepEqual(await waitFor(bob, 'roomExpired'), {});
        assert.deepEqual(await call2(old, 'joinRoom', { code }), [{ error: 'Room not found' }]);
      });
    });
  }
});
