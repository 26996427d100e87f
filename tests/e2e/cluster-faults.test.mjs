// The cluster through its failures, driven by the real `socket.io-client` under the three
// transport configurations at once (a fault is the whole cluster's): a room made on node 1
// (`--room-ttl 3s`) expires for its members on two nodes at one moment; Redis stopped mid-chat
// (same-node pairs chat on, the rest answers `Server busy`) and started again empty (the nodes
// put their rooms back); node 3 killed with SIGKILL mid-chat (its clients come back on node 1
// with their sockets, seats and the messages they missed: connection state recovery). Run
// by `cargo test --test cluster_e2e`, which starts redis-server and the three nodes and a control
// endpoint (PAIRCHAT_CONTROL_URL) that stops and starts Redis and kills nodes.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import {
  TRANSPORTS,
  ack,
  assertMessage,
  clients,
  createRoom,
  requireEnv,
  sleep,
  waitFor,
} from './lib.mjs';
import { proxied, reconnection } from './proxy.mjs';

const NODE = [1, 2, 3].map((n) => requireEnv(`PAIRCHAT_NODE${n}_URL`));
const CONTROL = requireEnv('PAIRCHAT_CONTROL_URL');
/** Node 1's `--room-ttl`. */
const ROOM_TTL_MS = 3000;
/** How long a dead node's partners may wait for `userLeft` (its key lives 5 s). */
const NODE_GONE_MS = 12000;
const JOINED_EMPTY = { success: true, messages: [] };
const BUSY = { error: 'Server busy' };

/** Has the harness stop or start Redis, or kill a node. */
async function control(action) {
  const res = await fetch(`${CONTROL}/${action}`, { method: 'POST' });
  assert.equal(res.status, 200, `control ${action}`);
}

/** Waits until `/health` of the node at `url` says Redis is `state`. */
async function redisState(url, state, ms = 10000) {
  const deadline = performance.now() + ms;
  for (;;) {
    const health = await (await fetch(`${url}/health`)).json();
    if (health.redis === state) return;
    assert.ok(performance.now() < deadline, `${url}: redis ${health.redis}, not ${state}`);
    await sleep(50);
  }
}

/** Alice on node `a` makes a room, Bob on node `b` joins it: `{code, alice, bob}`. */
async function pair(t, transport, a, b) {
  const alice = await clients(t, NODE[a - 1], transport)();
  const bob = await clients(t, NODE[b - 1], transport)();
  const code = await createRoom(alice);
  assert.deepEqual(await ack(bob, 'joinRoom', { code }), JOINED_EMPTY);
  assert.deepEqual(await waitFor(alice, 'userJoined'), { userId: bob.id });
  return { code, alice, bob };
}

/** `from` sends `text`: acknowledged, then the same message reaches both members. */
async function exchange(from, to, code, text) {
  const gotFrom = waitFor(from, 'newMessage');
  const gotTo = waitFor(to, 'newMessage');
  assert.deepEqual(await ack(from, 'sendMessage', { code, text }), { success: true }, text);
  const [mine, theirs] = await Promise.all([gotFrom, gotTo]);
  assertMessage(mine, from.id, text);
  assert.deepEqual(theirs, mine, 'both members get the same message');
  return mine;
}

/** Runs `scenario(transport)` under the three transport configurations at once. */
function everyTransport(scenario) {
  return Promise.all(TRANSPORTS.map((transport) => scenario(transport)));
}

describe('cluster faults', { concurrency: 1 }, () => {
  it('a room expires for its members on two nodes at one moment', async (t) => {
    await everyTransport(async (transport) => {
      const { code, alice, bob } = await pair(t, transport, 1, 2);
      await exchange(bob, alice, code, 'before the end');
      const at = await Promise.all(
        [alice, bob].map(async (s) => {
          assert.deepEqual(await waitFor(s, 'roomExpired', ROOM_TTL_MS + 3000), {});
          return performance.now();
        }),
      );
      assert.ok(Math.abs(at[0] - at[1]) < 1000, `expired ${Math.abs(at[0] - at[1])} ms apart`);
      for (const s of [alice, bob]) {
        assert.deepEqual(await ack(s, 'joinRoom', { code }), { error: 'Room not found' });
      }
    });
  });

  it('Redis stopped mid-chat: same-node pairs chat on, the rest is Server busy; started again, the cluster heals', async (t) => {
    const rooms = await Promise.all(
      TRANSPORTS.map(async (transport) => ({
        cross: await pair(t, transport, 2, 3),
        same: await pair(t, transport, 2, 2),
      })),
    );
    await Promise.all(rooms.map(({ cross: c }) => exchange(c.alice, c.bob, c.code, 'before')));

    await control('redis/stop');
    await Promise.all(NODE.map((url) => redisState(url, 'down')));
    await Promise.all(
      rooms.map(async ({ cross, same }) => {
        await exchange(same.alice, same.bob, same.code, 'no Redis needed');
        await exchange(same.bob, same.alice, same.code, 'none at all');
        const sent = await ack(cross.alice, 'sendMessage', { code: cross.code, text: 'lost' });
        assert.deepEqual(sent, BUSY);
        assert.deepEqual(await ack(cross.bob, 'createRoom', {}), BUSY);
      }),
    );

    await control('redis/start');
    await Promise.all(NODE.map((url) => redisState(url, 'up')));
    await Promise.all(
      rooms.map(async ({ cross, same }) => {
        await exchange(cross.alice, cross.bob, cross.code, 'healed');
        await exchange(cross.bob, cross.alice, cross.code, 'both ways');
        await exchange(same.alice, same.bob, same.code, 'still here');
        // Nobody heard of the refused message.
        for (const s of [cross.alice, cross.bob]) {
          const texts = s.received.filter((r) => r.event === 'newMessage').map((r) => r.args[0].text);
          assert.deepEqual(texts, ['before', 'healed', 'both ways']);
        }
      }),
    );
  });

  it('a node killed mid-chat: its clients come back on another node with the same socket, what they missed and their seat', async (t) => {
    const pairs = await Promise.all(
      TRANSPORTS.map(async (transport) => {
        // Alice on node 2 (node 1's rooms expire too soon for this), Bob on node 3.
        const alice = await clients(t, NODE[1], transport)();
        const bob = await proxied(t, NODE[2], transport);
        const code = await createRoom(alice);
        assert.deepEqual(await ack(bob, 'joinRoom', { code }), JOINED_EMPTY);
        assert.deepEqual(await waitFor(alice, 'userJoined'), { userId: bob.id });
        await exchange(alice, bob, code, 'before the crash');
        // Bob's next connections reach node 1.
        bob.proxy.retarget(NODE[0]);
        return { alice, bob, bobId: bob.id, code, heard: alice.received.length };
      }),
    );

    await control('kill/3');
    await everyTransport(async (transport) => {
      const { alice, bob, bobId, code, heard } = pairs[TRANSPORTS.indexOf(transport)];
      // Alice says something while Bob's node is dead: it reaches him once he is back.
      const missed = waitFor(bob, 'newMessage', NODE_GONE_MS);
      const mine = waitFor(alice, 'newMessage');
      const sent = await ack(alice, 'sendMessage', { code, text: 'while down' });
      assert.deepEqual(sent, { success: true });
      const message = await mine;
      const back = await reconnection(bob, 1, NODE_GONE_MS);
      assert.equal(back.recovered, true, 'the same socket, on node 1');
      assert.equal(bob.id, bobId);
      assert.deepEqual(await missed, message);
      await exchange(bob, alice, code, 'after the crash');
      const texts = bob.received.filter((r) => r.event === 'newMessage').map((r) => r.args[0].text);
      assert.deepEqual(texts, ['before the crash', 'while down', 'after the crash'], 'each once');
      // Alice heard Bob left and joined if his seat was reaped before he came back, else
      // nothing.
      const presence = alice.received
        .slice(heard)
        .filter((r) => r.event !== 'newMessage')
        .map((r) => [r.event, r.args[0]]);
      const heardOf = [
        ['userLeft', { userId: bobId }],
        ['userJoined', { userId: bobId }],
      ];
      assert.ok(presence.length === 0 || presence.length === 2, JSON.stringify(presence));
      if (presence.length === 2) assert.deepEqual(presence, heardOf);
    });
  });
});
