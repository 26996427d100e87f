// The chat contract across two cluster nodes (`--redis`), driven through the real
// `socket.io-client` under each transport configuration: one member on node 1, the other on
// node 2, as behind a load balancer. Run by `cargo test --test cluster_e2e`, which starts a
// redis-server and the two nodes and sets PAIRCHAT_NODE1_URL and PAIRCHAT_NODE2_URL.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import {
  TRANSPORTS,
  ack,
  assertMessage,
  assertReceived,
  clients,
  createRoom,
  deadCode,
  requireEnv,
  sleep,
  waitFor,
} from './lib.mjs';
import { drop, proxied, reconnection } from './proxy.mjs';

const NODE1 = requireEnv('PAIRCHAT_NODE1_URL');
const NODE2 = requireEnv('PAIRCHAT_NODE2_URL');
const JOINED_EMPTY = { success: true, messages: [] };

/** `from` sends `text` to `code`: acknowledged, then the same message reaches both members. */
async function exchange(from, to, code, text) {
  const before = Date.now();
  const gotFrom = waitFor(from, 'newMessage');
  const gotTo = waitFor(to, 'newMessage');
  assert.deepEqual(await ack(from, 'sendMessage', { code, text }), { success: true });
  const [mine, theirs] = await Promise.all([gotFrom, gotTo]);
  assertMessage(mine, from.id, text, { after: before, before: Date.now() });
  assert.deepEqual(theirs, mine, 'both members get the same message');
  return mine;
}

/**
 * Alice on node 1 makes a room and Bob on node 2 joins it (Alice is told), with `more`
 * sockets on the nodes given (1 or 2): `[code, alice, bob, ...more]`.
 */
async function pair(t, transport, ...more) {
  const on = { 1: clients(t, NODE1, transport), 2: clients(t, NODE2, transport) };
  const sockets = await Promise.all([1, 2, ...more].map((node) => on[node]()));
  const [alice, bob] = sockets;
  const code = await createRoom(alice);
  assert.deepEqual(await ack(bob, 'joinRoom', { code }), JOINED_EMPTY);
  assert.deepEqual(await waitFor(alice, 'userJoined'), { userId: bob.id });
  return [code, ...sockets];
}

// The three transport suites run side by side (each its own sockets and rooms); the scenarios
// inside a suite run one after the other.
describe('cluster', { concurrency: TRANSPORTS.length }, () => {
  for (const transport of TRANSPORTS) {
    describe(transport.name, { concurrency: 1 }, () => {
      it('a room made on node 1 is joined on node 2, with its history', async (t) => {
        const [on1, on2] = [clients(t, NODE1, transport), clients(t, NODE2, transport)];
        const [alice, bob] = await Promise.all([on1(), on2()]);
        const code = await createRoom(alice);
        const first = waitFor(alice, 'newMessage');
        assert.deepEqual(await ack(alice, 'sendMessage', { code, text: 'before bob' }), {
          success: true,
        });
        const message = await first;
        assertMessage(message, alice.id, 'before bob');
        assert.deepEqual(await ack(bob, 'joinRoom', { code }), {
          success: true,
          messages: [message],
        });
        assert.deepEqual(await waitFor(alice, 'userJoined'), { userId: bob.id });
        await assertReceived([
          [alice, ['newMessage', 'userJoined']],
          [bob, []],
        ]);
      });

      it('messages cross the nodes both ways, each delivered once to each member', async (t) => {
        const [code, alice, bob] = await pair(t, transport);
        const sent = [];
        for (const [from, to, text] of [
          [alice, bob, 'from node 1'],
          [bob, alice, 'from node 2'],
          [alice, bob, 'node 1 again'],
          [bob, alice, 'node 2 again'],
        ]) {
          sent.push(await exchange(from, to, code, text));
        }
        await assertReceived([
          [alice, ['userJoined', ...sent.map(() => 'newMessage')]],
          [bob, sent.map(() => 'newMessage')],
        ]);
        // The history, read on node 2, has them in the same order.
        assert.deepEqual(await ack(bob, 'joinRoom', { code }), { success: true, messages: sent });
      });

      it('a third socket on either node gets Room full; a dead code, Room not found', async (t) => {
        const [code, alice, bob, carol, dave] = await pair(t, transport, 1, 2);
        for (const third of [carol, dave]) {
          assert.deepEqual(await ack(third, 'joinRoom', { code }), { error: 'Room full' });
        }
        // A room made and left on one node is gone on the other.
        assert.deepEqual(await ack(dave, 'joinRoom', { code: await deadCode(carol) }), {
          error: 'Room not found',
        });
        assert.deepEqual(await ack(carol, 'joinRoom', { code: await deadCode(dave) }), {
          error: 'Room not found',
        });
        await exchange(bob, alice, code, 'still ours');
        await assertReceived([
          [alice, ['userJoined', 'newMessage']],
          [bob, ['newMessage']],
          [carol, []],
          [dave, []],
        ]);
      });

      it('userLeft crosses the nodes; a newcomer takes the seat, with the history', async (t) => {
        const [code, alice, bob, carol, dave] = await pair(t, transport, 2, 1);
        const hello = await exchange(alice, bob, code, 'hello');

        // Bob (node 2) disconnects: Alice (node 1) is told.
        const bobId = bob.id;
        bob.disconnect();
        assert.deepEqual(await waitFor(alice, 'userLeft'), { userId: bobId });

        // Carol (node 2) takes the seat and gets the history; then Alice disconnects.
        assert.deepEqual(await ack(carol, 'joinRoom', { code }), {
          success: true,
          messages: [hello],
        });
        assert.deepEqual(await waitFor(alice, 'userJoined'), { userId: carol.id });
        const aliceId = alice.id;
        alice.disconnect();
        assert.deepEqual(await waitFor(carol, 'userLeft'), { userId: aliceId });

        // The last member leaves: the room is gone, on node 1 too.
        assert.deepEqual(await ack(carol, 'leaveRoom', { code }), { success: true });
        assert.deepEqual(await ack(dave, 'joinRoom', { code }), { error: 'Room not found' });
        await assertReceived([
          [carol, ['userLeft']],
          [dave, []],
        ]);
        assert.deepEqual(
          alice.received.map((r) => r.event),
          ['userJoined', 'newMessage', 'userLeft', 'userJoined'],
          'alice, before she left',
        );
        assert.deepEqual(
          bob.received.map((r) => r.event),
          ['newMessage'],
          'bob, before he left',
        );
      });

      it('a member whose connection drops recovers on the other node: same socket, what it missed, once', async (t) => {
        const alice = await clients(t, NODE1, transport)();
        const bob = await proxied(t, NODE2, transport);
        const code = await createRoom(alice);
        assert.deepEqual(await ack(bob, 'joinRoom', { code }), JOINED_EMPTY);
        assert.deepEqual(await waitFor(alice, 'userJoined'), { userId: bob.id });
        await exchange(alice, bob, code, 'before');
        const id = bob.id;

        // Bob's connections drop; his next ones reach node 1, where Alice is. Alice talks on.
        bob.proxy.retarget(NODE1);
        await drop(bob, 'rst', { holdMs: 300 });
        for (const text of ['while away 1', 'while away 2']) {
          assert.deepEqual(await ack(alice, 'sendMessage', { code, text }), { success: true });
        }
        const back = await reconnection(bob, 1);
        assert.equal(back.recovered, true, `not recovered: ${JSON.stringify(back)}`);
        assert.equal(bob.id, id, 'a recovered socket keeps its id');
        for (const socket of [alice, bob]) {
          for (const text of ['while away 1', 'while away 2']) {
            assertMessage(await waitFor(socket, 'newMessage'), alice.id, text);
          }
        }
        await exchange(bob, alice, code, 'back');
        await exchange(alice, bob, code, 'welcome back');
        await sleep(250);
        const texts = (s) => s.received.filter((r) => r.event === 'newMessage').map((r) => r.args[0].text);
        const all = ['before', 'while away 1', 'while away 2', 'back', 'welcome back'];
        assert.deepEqual(texts(bob), all, 'bob gets every message once, in order');
        assert.deepEqual(texts(alice), all, 'alice too');
      });
    });
  }
});
