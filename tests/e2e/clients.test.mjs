// Clients besides socket.io-client 4.x with its default parser, against pairchat with its default
// `--parser auto`, under the three transport settings:
// - socket.io-msgpack-parser 3.0.2 with the real `socket.io-client` 4.8: a msgpack client and a
//   JSON client share a room (each session's first packet says which parser it speaks, and a
//   room's events reach each in its own), and a msgpack client recovers its socket and what it
//   missed (offsets travel in msgpack events). A msgpack client speaks nothing but msgpack: had
//   the server sent it one JSON text packet, its decoder would have thrown.
// - socket.io-client 3.1.3 (Engine.IO v4, Socket.IO v5 as 4.x): the chat with a 4.x client.
// Run by `cargo test --test e2e` against a server it starts (PAIRCHAT_URL).

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { io as io3 } from 'socket.io-client-3';
import parser from 'socket.io-msgpack-parser';

import {
  TRANSPORTS,
  URL,
  ack,
  assertMessage,
  clients,
  createRoom,
  sleep,
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
