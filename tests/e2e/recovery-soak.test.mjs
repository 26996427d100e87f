// The recovery soak: under each transport setting at once, two clients chat flat out through
// proxies of their own while the proxies cut one or both of them at random (resets and black
// holes), SOAK_CUTS cuts in all (default 200). Then every message acked to its sender must have
// reached both members exactly once, every message received must be in its sender's order with
// no duplicate, each member must have heard its partner leave and return in turn, and once both
// disconnect the server must hold no socket, away socket, room or session. Prints the recovery
// rate (from the clients and from /metrics) and how long recoveries took. Run by
// `cargo test --test recovery_e2e`, which starts a server of its own for it (PAIRCHAT_URL,
// `--recovery-window 10s`, a 300 ms heartbeat, no message rate limit). SOAK_SEED replays a run.

import assert from 'node:assert/strict';
import { it } from 'node:test';

import { TRANSPORTS, URL, ack, createRoom, sleep, waitFor } from './lib.mjs';
import { drop, proxied, reconnection } from './proxy.mjs';

const CUTS = Number(process.env.SOAK_CUTS || 200);
const SEED = Number(process.env.SOAK_SEED || Date.now() % 1_000_000);
/** How long a `sendMessage` waits for its ack (it waits in the client while disconnected). */
const ACK_MS = 5000;
/** How long a cut client may take to notice, and then to be back. */
const BACK_MS = 8000;

/** mulberry32: a seeded generator, so that SOAK_SEED replays a run's choices. */
const random = (() => {
  let s = SEED >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let x = Math.imul(s ^ (s >>> 15), 1 | s);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
})();
const between = (lo, hi) => lo + random() * (hi - lo);

it(`recovery soak: ${CUTS} random cuts while two clients chat (seed ${SEED})`, async (t) => {
  const before = await scrape();
  const started = performance.now();
  const pairs = await Promise.all(
    TRANSPORTS.map(async (transport, i) => {
      const a = await proxied(t, URL, transport);
      const b = await proxied(t, URL, transport);
      const code = await createRoom(a);
      assert.deepEqual(await ack(b, 'joinRoom', { code }), { success: true, messages: [] });
      assert.deepEqual(await waitFor(a, 'userJoined'), { userId: b.id });
      // Each pair's share of the cuts, the remainder to the first ones.
      const cuts = Math.floor(CUTS / TRANSPORTS.length) + (i < CUTS % TRANSPORTS.length);
      return { transport, code, cuts, members: [member(a, 'a'), member(b, 'b')] };
    }),
  );
  const members = pairs.flatMap((p) => p.members);

  // However the test ends, the senders and cutters stop.
  const stop = () => [...pairs, ...members].forEach((x) => (x.stop = true));
  t.after(stop);
  const chatting = pairs.flatMap((p) => p.members.map((m) => chatter(m, p.code)));
  const backs = { rst: [], blackhole: [] }; // the reconnection after each cut, by mode
  await Promise.all(pairs.map((p) => cutter(p, backs)));
  stop();
  await Promise.all(chatting);
  const cutting = performance.now() - started;
  // Quiescence: every ack settled, nothing more arriving.
  await Promise.all(members.flatMap((m) => m.pending));
  await settle(members);

  const report = [`soak: seed ${SEED}, ${(cutting / 1000).toFixed(1)} s of chat and cuts`];
  const failures = pairs.flatMap((p) => check(p, report));
  const reconnections = members.flatMap((m) => m.socket.reconnections);
  const recovered = reconnections.filter((r) => r.recovered).length;
  const after = await scrape();
  const served = (result) => {
    const name = `pairchat_recoveries_total{result="${result}"}`;
    return after[name] - before[name];
  };
  report.push(
    `cuts: ${backs.rst.length} rst + ${backs.blackhole.length} blackhole`,
    `clients: ${recovered} of ${reconnections.length} reconnections recovered`,
    `server: recoveries recovered ${served('recovered')}, unknown_session ` +
      `${served('unknown_session')}, missed_events_dropped ${served('missed_events_dropped')}, ` +
      `too_often ${served('too_often')}`,
  );
  for (const [mode, list] of Object.entries(backs)) {
    const since = (key) => stats(list.map((r) => r.at - r[key]));
    report.push(
      `${mode}: to the recovered connect from the cut: ${since('cutAt')}`,
      `${mode}:   from the client's disconnect event: ${since('downAt')}`,
      `${mode}:   from the last reconnect_attempt: ${since('attemptAt')}`,
      `${mode}:   from the engine's open: ${since('openAt')}`,
    );
  }
  console.log(report.join('\n'));
  assert.deepEqual(failures, []);
  assert.equal(recovered, reconnections.length, 'every reconnection recovers');
  assert.equal(
    served('unknown_session') + served('missed_events_dropped') + served('too_often'),
    0,
  );

  // Nothing is left once the clients leave (an explicit disconnect is not recoverable).
  for (const m of members) m.socket.disconnect();
  const gauges = [
    'pairchat_sio_sockets',
    'pairchat_sio_away_sockets',
    'pairchat_rooms',
    'pairchat_recovery_bytes',
    'pairchat_sessions{transport="polling"}',
    'pairchat_sessions{transport="websocket"}',
  ];
  const deadline = performance.now() + 5000;
  for (let now = await scrape(); !gauges.every((g) => now[g] === 0); now = await scrape()) {
    const held = gauges.map((g) => `${g} ${now[g]}`).join(', ');
    assert.ok(performance.now() < deadline, `the server still holds: ${held}`);
    await sleep(100);
  }
});

/** A member: its socket, its name in texts, how many it sent, which were acked or refused. */
function member(socket, name) {
  return { socket, name, sent: 0, acked: [], refused: [], pending: [], stop: false };
}

/** Sends numbered messages until told to stop, awaiting the ack of about half of them. */
async function chatter(m, code) {
  for (let n = 1; !m.stop; n++) {
    const text = `${m.name}:${n}`;
    m.sent = n;
    const settled = new Promise((resolve) => {
      m.socket.timeout(ACK_MS).emit('sendMessage', { code, text }, (err, reply) => {
        if (!err && reply?.success === true) m.acked.push(n);
        else if (!err) m.refused.push([n, reply]);
        resolve();
      });
    });
    m.pending.push(settled);
    if (random() < 0.5) await settled;
    await sleep(between(2, 12));
  }
}

/** Cuts the pair's members at random until its share is done, each time until they are back. */
async function cutter(pair, backs) {
  let left = pair.cuts;
  while (left > 0 && !pair.stop) {
    await sleep(between(20, 200));
    const pick = random();
    const targets = pick < 0.4 || left === 1 ? [0] : pick < 0.8 ? [1] : [0, 1];
    left -= targets.length;
    // Down a little longer sometimes, so that more events wait for the client.
    const holdMs = random() < 0.5 ? 0 : between(0, 300);
    await Promise.all(
      targets.map(async (i) => {
        const { socket } = pair.members[i];
        const mode = random() < 0.5 ? 'rst' : 'blackhole';
        const n = socket.reconnections.length + 1;
        const cutAt = performance.now();
        await drop(socket, mode, { holdMs, ms: BACK_MS });
        backs[mode].push({ ...(await reconnection(socket, n, BACK_MS)), cutAt });
      }),
    );
  }
}

/** Waits until no member has received anything for 500 ms. */
async function settle(members) {
  const count = () => members.reduce((n, m) => n + m.socket.received.length, 0);
  for (let seen = -1; seen !== count(); ) {
    seen = count();
    await sleep(500);
  }
}

/**
 * What went wrong in a pair, as messages (and a line per member in `report`). Per sender: every
 * acked message received, none twice, in order, none never sent; the partner's leaves and
 * returns in turn; every reconnection recovered.
 */
function check(pair, report) {
  const failures = [];
  const fail = (what) => failures.push(what);
  const byId = new Map(pair.members.map((m) => [m.socket.id, m.name]));
  for (const [i, m] of pair.members.entries()) {
    const who = `${pair.transport.name}, ${m.name}`;
    const { socket } = m;
    if (m.refused.length) fail(`${who}: sendMessage refused: ${JSON.stringify(m.refused[0])}`);
    const got = new Map(pair.members.map((s) => [s.name, []]));
    const told = [];
    for (const { event, args } of socket.received) {
      if (event !== 'newMessage') {
        told.push([event, args[0]]);
        continue;
      }
      const { sender, text } = args[0];
      const [name, n] = text.split(':');
      if (byId.get(sender) !== name) fail(`${who}: ${text} from ${sender}`);
      else got.get(name).push(Number(n));
    }
    for (const s of pair.members) {
      const seq = got.get(s.name);
      const at = seq.findIndex((n, k) => k > 0 && n <= seq[k - 1]);
      if (at >= 0) fail(`${who}: ${s.name}'s messages ${seq.slice(Math.max(0, at - 2), at + 2)} at ${at}`);
      if (seq.some((n) => n < 1 || n > s.sent)) fail(`${who}: a message ${s.name} never sent`);
      const have = new Set(seq);
      const lost = s.acked.filter((n) => !have.has(n));
      if (lost.length) fail(`${who}: ${lost.length} acked of ${s.name} lost, from ${lost[0]}`);
    }
    // The partner's leaves and returns, in turn; the first event of a is b joining.
    const partner = { userId: pair.members[1 - i].socket.id };
    const turns = i === 0 ? told.slice(1) : told;
    if (i === 0 && JSON.stringify(told[0]) !== JSON.stringify(['userJoined', partner])) {
      fail(`${who}: first event ${JSON.stringify(told[0])}`);
    }
    const wrong = turns.findIndex(([event, payload], k) => {
      const expected = [k % 2 ? 'userJoined' : 'userLeft', partner];
      return JSON.stringify([event, payload]) !== JSON.stringify(expected);
    });
    if (wrong >= 0) fail(`${who}: ${JSON.stringify(turns.slice(wrong - 1, wrong + 2))}`);
    if (turns.length % 2) fail(`${who}: its partner did not come back`);
    const failed = socket.reconnections.findIndex((r) => !r.recovered);
    if (failed >= 0) {
      const r = socket.reconnections[failed];
      fail(
        `${who}: reconnection ${failed + 1} not recovered ` +
          `(claimed ${JSON.stringify(r.claim)}, ${r.id} instead of ${socket.reconnections[failed - 1]?.id ?? 'the first'})`,
      );
    }
    const received = [...got.values()].reduce((n, seq) => n + seq.length, 0);
    report.push(
      `${who}: sent ${m.sent} (${m.acked.length} acked), received ${received}, ` +
        `${socket.reconnections.length} reconnections, partner away and back ${turns.length >> 1}`,
    );
  }
  return failures;
}

/** `/metrics` of the server, as `name{labels}` → number. */
async function scrape() {
  const text = await (await fetch(`${URL}/metrics`)).text();
  const values = {};
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const at = line.lastIndexOf(' ');
    values[line.slice(0, at)] = Number(line.slice(at + 1));
  }
  return values;
}

/** `median …, p95 …, max … ms (n)` of `values`. */
function stats(values) {
  if (values.length === 0) return 'none';
  const sorted = [...values].sort((x, y) => x - y);
  const at = (q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
  const ms = (v) => v.toFixed(0);
  return `median ${ms(at(0.5))} ms, p95 ${ms(at(0.95))} ms, max ${ms(sorted.at(-1))} ms (n=${sorted.length})`;
}
