// The chat contract, driven through the real `socket.io-client` under each transport
// configuration. Run by `cargo test --test e2e`, which starts the servers and sets
// PAIRCHAT_URL (default settings) and PAIRCHAT_EXPIRY_URL (`--room-ttl 1500ms`).

import assert from 'node:assert/strict';
import http from 'node:http';
import { describe, it } from 'node:test';

import {
  TRANSPORTS,
  URL,
  ack,
  assertCode,
  assertMessage,
  assertReceived,
  clients,
  createRoom,
  deadCode,
  expectNone,
  requireEnv,
  sleep,
  transportName,
  waitFor,
} from './lib.mjs';

/** A second server: `--room-ttl 1500ms --ping-interval 250ms --ping-timeout 1s`. */
const EXPIRY_URL = requireEnv('PAIRCHAT_EXPIRY_URL');
const MAX_CHARS = 2000; // the server's default --max-message-chars
const JOINED_EMPTY = { success: true, messages: [] };

// The three transport suites run side by side (each its own sockets and rooms); the scenarios
// inside a suite run one after the other.
describe('chat', { concurrency: TRANSPORTS.length }, () => {
  for (const transport of TRANSPORTS) {
    describe(transport.name, { concurrency: 1 }, () => {
      it(`connects and ends up on ${transport.final}`, async (t) => {
        const client = clients(t, URL, transport);
        const socket = await client({ waitUpgrade: false });
        assert.equal(typeof socket.id, 'string');
        assert.ok(socket.id.length > 0);
        if (transport.upgrade) {
          assert.equal(await socket.upgraded, 'websocket');
        }
        assert.equal(transportName(socket), transport.final);
        // The session works on its final transport.
        await createRoom(socket);
        await assertReceived([[socket, []]]);
      });

      it('createRoom answers distinct six-digit codes, with or without a payload', async (t) => {
        const client = clients(t, URL, transport);
        const [a, b, c] = await Promise.all([client(), client(), client()]);
        const codes = [await createRoom(a), await createRoom(b)];
        const bare = await ack(c, 'createRoom'); // no payload at all
        assertCode(bare);
        codes.push(bare.code);
        assert.equal(new Set(codes).size, 3, `codes of live rooms must differ: ${codes}`);
        await assertReceived([
          [a, []],
          [b, []],
          [c, []],
        ]);
      });

      it('the second member joins: empty history, the creator gets userJoined', async (t) => {
        const client = clients(t, URL, transport);
        const [a, b] = await Promise.all([client(), client()]);
        const code = await createRoom(a);
        const joined = waitFor(a, 'userJoined');
        assert.deepEqual(await ack(b, 'joinRoom', { code }), JOINED_EMPTY);
        assert.deepEqual(await joined, { userId: b.id });
        await assertReceived([
          [a, ['userJoined']],
          [b, []],
        ]);
      });

      it('joinRoom accepts the code as a number (and with surrounding spaces)', async (t) => {
        const client = clients(t, URL, transport);
        const [a, b, c] = await Promise.all([client(), client(), client()]);
        const code = await createRoom(a);
        assert.deepEqual(await ack(b, 'joinRoom', { code: Number(code) }), {
          success: true,
          messages: [],
        });
        assert.deepEqual(await waitFor(a, 'userJoined'), { userId: b.id });
        const other = await createRoom(c);
        assert.deepEqual(await ack(a, 'joinRoom', { code: ` ${other} ` }), {
          success: true,
          messages: [],
        });
      });

      it('joinRoom answers Room not found for a code no room has', async (t) => {
        const client = clients(t, URL, transport);
        const [a, b] = await Promise.all([client(), client()]);
        const code = await deadCode(a);
        assert.deepEqual(await ack(b, 'joinRoom', { code }), { error: 'Room not found' });
        assert.deepEqual(await ack(b, 'joinRoom', { code: Number(code) }), {
          error: 'Room not found',
        });
        // Six digits with a leading zero: well-formed, never a live room.
        for (const zero of ['012345', '099999', '000000']) {
          assert.deepEqual(await ack(b, 'joinRoom', { code: zero }), { error: 'Room not found' });
        }
        await assertReceived([
          [a, []],
          [b, []],
        ]);
      });

      it('joinRoom answers Invalid room code for a missing or malformed code', async (t) => {
        const client = clients(t, URL, transport);
        const socket = await client();
        assert.deepEqual(await ack(socket, 'joinRoom'), { error: 'Invalid room code' });
        for (const payload of [
          {},
          { code: null },
          { code: '' },
          { code: '12345' },
          { code: '1234567' },
          { code: 'abcdef' },
          { code: '12a456' },
          { code: 12345 },
          { code: 1000000 },
          { code: 123456.5 },
          { code: -123456 },
          { code: true },
          { code: ['123456'] },
          { code: { code: '123456' } },
          { room: '123456' },
        ]) {
          assert.deepEqual(
            await ack(socket, 'joinRoom', payload),
            { error: 'Invalid room code' },
            JSON.stringify(payload),
          );
        }
        assert.deepEqual(await ack(socket, 'joinRoom', '123456'), { error: 'Invalid room code' });
        await assertReceived([[socket, []]]);
      });

      it('a third socket gets Room full and the members hear nothing', async (t) => {
        const client = clients(t, URL, transport);
        const [a, b, c] = await Promise.all([client(), client(), client()]);
        const code = await createRoom(a);
        assert.deepEqual(await ack(b, 'joinRoom', { code }), JOINED_EMPTY);
        await waitFor(a, 'userJoined');
        assert.deepEqual(await ack(c, 'joinRoom', { code }), { error: 'Room full' });
        // The refused socket is not a member: it can neither send nor read.
        assert.deepEqual(await ack(c, 'sendMessage', { code, text: 'let me in' }), {
          error: 'Not a member of this room',
        });
        assert.deepEqual(await ack(a, 'sendMessage', { code, text: 'members only' }), {
          success: true,
        });
        await Promise.all([waitFor(a, 'newMessage'), waitFor(b, 'newMessage')]);
        await assertReceived([
          [a, ['userJoined', 'newMessage']],
          [b, ['newMessage']],
          [c, []],
        ]);
      });

      it('a failed join does not cost the current room', async (t) => {
        const client = clients(t, URL, transport);
        const [a, b, c, d] = await Promise.all([client(), client(), client(), client()]);
        const code = await createRoom(a);
        assert.deepEqual(await ack(b, 'joinRoom', { code }), JOINED_EMPTY);
        await waitFor(a, 'userJoined');
        const full = await createRoom(c);
        assert.deepEqual(await ack(d, 'joinRoom', { code: full }), JOINED_EMPTY);
        await waitFor(c, 'userJoined');
        assert.deepEqual(await ack(b, 'joinRoom', { code: full }), { error: 'Room full' });
        assert.deepEqual(await ack(b, 'joinRoom', { code: await deadCode(d) }), {
          error: 'Room not found',
        });
        // d left its room on the way (deadCode creates a room, which leaves the old one first).
        await waitFor(c, 'userLeft');
        assert.deepEqual(await ack(b, 'sendMessage', { code, text: 'still here' }), {
          success: true,
        });
        assertMessage(await waitFor(a, 'newMessage'), b.id, 'still here');
        await assertReceived([
          [a, ['userJoined', 'newMessage']],
          [b, ['newMessage']],
          [c, ['userJoined', 'userLeft']],
          [d, []],
        ]);
      });

      it('sendMessage reaches both members, the sender too, with sender = socket.id', async (t) => {
        const client = clients(t, URL, transport);
        const [a, b] = await Promise.all([client(), client()]);
        const code = await createRoom(a);
        assert.deepEqual(await ack(b, 'joinRoom', { code }), JOINED_EMPTY);
        await waitFor(a, 'userJoined');

        for (const [from, text, roomCode] of [
          [a, 'hello', code],
          [b, 'hi there', Number(code)], // a numeric code works here too
        ]) {
          const before = Date.now();
          const gotA = waitFor(a, 'newMessage');
          const gotB = waitFor(b, 'newMessage');
          assert.deepEqual(await ack(from, 'sendMessage', { code: roomCode, text }), {
            success: true,
          });
          const [ma, mb] = await Promise.all([gotA, gotB]);
          const after = Date.now();
          assertMessage(ma, from.id, text, { after: before, before: after });
          assert.deepEqual(mb, ma, 'both members get the same message');
        }
        await assertReceived([
          [a, ['userJoined', 'newMessage', 'newMessage']],
          [b, ['newMessage', 'newMessage']],
        ]);
      });

      it('message text round-trips exactly (quotes, escapes, newlines, unicode)', async (t) => {
        const client = clients(t, URL, transport);
        const [a, b] = await Promise.all([client(), client()]);
        const code = await createRoom(a);
        assert.deepEqual(await ack(b, 'joinRoom', { code }), JOINED_EMPTY);
        const texts = [
          'say "hi"\\ and \'bye\'',
          'line one\nline two\r\n\ttabbed',
          'ünïcödé → ✓ 日本語 😀👍🏽',
          '\u0001\u001f control \u2028 separators \u2029',
          '</script><b>not html</b> & 42',
          '  padded  ',
        ];
        for (const text of texts) {
          const got = waitFor(b, 'newMessage');
          assert.deepEqual(await ack(a, 'sendMessage', { code, text }), { success: true });
          assertMessage(await got, a.id, text);
        }
        const c = await client();
        assert.deepEqual(await ack(b, 'leaveRoom', { code }), { success: true });
        const joined = await ack(c, 'joinRoom', { code });
        assert.deepEqual(
          joined.messages.map((m) => m.text),
          texts,
        );
      });

      it('sendMessage refuses bad text with the documented errors, delivering nothing', async (t) => {
        const client = clients(t, URL, transport);
        const [a, b] = await Promise.all([client(), client()]);
        const code = await createRoom(a);
        assert.deepEqual(await ack(b, 'joinRoom', { code }), JOINED_EMPTY);
        await waitFor(a, 'userJoined');
        const cases = [
          [{ code }, 'Message text must be a string'],
          [{ code, text: null }, 'Message text must be a string'],
          [{ code, text: 42 }, 'Message text must be a string'],
          [{ code, text: ['hi'] }, 'Message text must be a string'],
          [{ code, text: { text: 'hi' } }, 'Message text must be a string'],
          [{ code, text: '' }, 'Message text is empty'],
          [{ code, text: '   \n\t ' }, 'Message text is empty'],
          [{ code, text: 'x'.repeat(MAX_CHARS + 1) }, 'Message text is too long'],
          [{ code, text: '😀'.repeat(MAX_CHARS + 1) }, 'Message text is too long'],
          [{ text: 'hi' }, 'Invalid room code'],
          [{ code: '12345', text: 'hi' }, 'Invalid room code'],
        ];
        for (const [payload, error] of cases) {
          assert.deepEqual(
            await ack(a, 'sendMessage', payload),
            { error },
            JSON.stringify(payload).slice(0, 80),
          );
        }
        assert.deepEqual(await ack(a, 'sendMessage'), { error: 'Invalid room code' });
        await Promise.all([expectNone(a, 'newMessage'), expectNone(b, 'newMessage')]);
        await assertReceived(
          [
            [a, ['userJoined']],
            [b, []],
          ],
          { quiet: 0 },
        );
      });

      it('the length limit counts characters, not UTF-16 units or bytes', async (t) => {
        const client = clients(t, URL, transport);
        const [a, b] = await Promise.all([client(), client()]);
        const code = await createRoom(a);
        assert.deepEqual(await ack(b, 'joinRoom', { code }), JOINED_EMPTY);
        for (const unit of ['x', 'é', '😀']) {
          const text = unit.repeat(MAX_CHARS);
          const got = waitFor(b, 'newMessage');
          assert.deepEqual(await ack(a, 'sendMessage', { code, text }), { success: true });
          assertMessage(await got, a.id, text);
        }
      });

      it('sendMessage from a non-member or to a dead room is refused, heard by nobody', async (t) => {
        const client = clients(t, URL, transport);
        const [a, b, outsider] = await Promise.all([client(), client(), client()]);
        const code = await createRoom(a);
        assert.deepEqual(await ack(b, 'joinRoom', { code }), JOINED_EMPTY);
        await waitFor(a, 'userJoined');
        assert.deepEqual(await ack(outsider, 'sendMessage', { code, text: 'psst' }), {
          error: 'Not a member of this room',
        });
        const dead = await deadCode(outsider);
        assert.deepEqual(await ack(outsider, 'sendMessage', { code: dead, text: 'anyone?' }), {
          error: 'Room not found',
        });
        // A member naming a room it is not in is refused too, even with its own room alive.
        assert.deepEqual(await ack(a, 'sendMessage', { code: dead, text: 'wrong room' }), {
          error: 'Room not found',
        });
        await Promise.all([a, b, outsider].map((s) => expectNone(s, 'newMessage')));
        await assertReceived(
          [
            [a, ['userJoined']],
            [b, []],
            [outsider, []],
          ],
          { quiet: 0 },
        );
        // The refused message is not in the history either.
        assert.deepEqual(await ack(b, 'joinRoom', { code }), JOINED_EMPTY);
      });

      it('history comes oldest first to a joiner, with every field', async (t) => {
        const client = clients(t, URL, transport);
        const [a, b] = await Promise.all([client(), client()]);
        const code = await createRoom(a);
        const texts = ['one', 'two', 'three', 'four', 'five'];
        const sent = [];
        for (const text of texts) {
          const got = waitFor(a, 'newMessage');
          assert.deepEqual(await ack(a, 'sendMessage', { code, text }), { success: true });
          sent.push(await got);
        }
        const joined = await ack(b, 'joinRoom', { code });
        assert.equal(joined.success, true);
        assert.deepEqual(joined.messages, sent, 'history is exactly what was delivered, in order');
        joined.messages.forEach((m, i) => assertMessage(m, a.id, texts[i]));
        for (let i = 1; i < joined.messages.length; i++) {
          assert.ok(joined.messages[i].timestamp >= joined.messages[i - 1].timestamp);
        }
        // Messages from both members interleave in sending order.
        const more = [];
        for (const [from, text] of [
          [b, 'six'],
          [a, 'seven'],
          [b, 'eight'],
        ]) {
          const got = waitFor(b, 'newMessage');
          assert.deepEqual(await ack(from, 'sendMessage', { code, text }), { success: true });
          more.push(await got);
        }
        // Joining a room you are in succeeds, returns the history, and tells nobody.
        const again = await ack(b, 'joinRoom', { code });
        assert.deepEqual(again, { success: true, messages: [...sent, ...more] });
        assert.deepEqual(
          again.messages.map((m) => [m.sender, m.text]),
          [
            ...texts.map((text) => [a.id, text]),
            [b.id, 'six'],
            [a.id, 'seven'],
            [b.id, 'eight'],
          ],
        );
        await assertReceived([
          [a, [...texts.map(() => 'newMessage'), 'userJoined', ...more.map(() => 'newMessage')]],
          [b, ['newMessage', 'newMessage', 'newMessage']],
        ]);
      });

      it('a burst of messages arrives complete and in order', async (t) => {
        const client = clients(t, URL, transport);
        const [a, b] = await Promise.all([client(), client()]);
        const code = await createRoom(a);
        assert.deepEqual(await ack(b, 'joinRoom', { code }), JOINED_EMPTY);
        const n = 50;
        const texts = Array.from({ length: n }, (_, i) => `burst ${i}`);
        // One waiter per message, registered before sending: they resolve in arrival order.
        const delivered = Promise.all(texts.map(() => waitFor(b, 'newMessage')));
        const acks = await Promise.all(texts.map((text) => ack(a, 'sendMessage', { code, text })));
        assert.ok(
          acks.every((r) => r.success === true),
          JSON.stringify(acks),
        );
        const got = (await delivered).map((m) => m.text);
        assert.deepEqual(got, texts);
        const history = await ack(b, 'joinRoom', { code });
        assert.deepEqual(
          history.messages.map((m) => m.text),
          texts,
        );
      });

      it('two rooms are isolated', async (t) => {
        const client = clients(t, URL, transport);
        const [a1, b1, a2, b2] = await Promise.all([client(), client(), client(), client()]);
        const code1 = await createRoom(a1);
        const code2 = await createRoom(a2);
        assert.notEqual(code1, code2);
        assert.deepEqual(await ack(b1, 'joinRoom', { code: code1 }), JOINED_EMPTY);
        assert.deepEqual(await ack(b2, 'joinRoom', { code: code2 }), JOINED_EMPTY);
        await Promise.all([waitFor(a1, 'userJoined'), waitFor(a2, 'userJoined')]);

        const got1 = Promise.all([waitFor(a1, 'newMessage'), waitFor(b1, 'newMessage')]);
        assert.deepEqual(await ack(a1, 'sendMessage', { code: code1, text: 'room one' }), {
          success: true,
        });
        for (const m of await got1) assertMessage(m, a1.id, 'room one');
        const got2 = Promise.all([waitFor(a2, 'newMessage'), waitFor(b2, 'newMessage')]);
        assert.deepEqual(await ack(b2, 'sendMessage', { code: code2, text: 'room two' }), {
          success: true,
        });
        for (const m of await got2) assertMessage(m, b2.id, 'room two');
        // A member of one room cannot post into the other.
        assert.deepEqual(await ack(a1, 'sendMessage', { code: code2, text: 'intruder' }), {
          error: 'Not a member of this room',
        });
        // Leaving one room tells nobody in the other.
        assert.deepEqual(await ack(b1, 'leaveRoom', { code: code1 }), { success: true });
        await waitFor(a1, 'userLeft');

        await assertReceived([
          [a1, ['userJoined', 'newMessage', 'userLeft']],
          [b1, ['newMessage']],
          [a2, ['userJoined', 'newMessage']],
          [b2, ['newMessage']],
        ]);
        assert.deepEqual(
          (await ack(b2, 'joinRoom', { code: code2 })).messages.map((m) => m.text),
          ['room two'],
        );
      });

      it('disconnecting sends userLeft to the partner; the room lives on', async (t) => {
        const client = clients(t, URL, transport);
        const [a, b, c] = await Promise.all([client(), client(), client()]);
        const code = await createRoom(a);
        assert.deepEqual(await ack(b, 'joinRoom', { code }), JOINED_EMPTY);
        await waitFor(a, 'userJoined');
        const bId = b.id;
        const left = waitFor(a, 'userLeft');
        b.disconnect();
        assert.deepEqual(await left, { userId: bId });
        // The room still has its creator, and room for one more.
        assert.deepEqual(await ack(a, 'sendMessage', { code, text: 'alone' }), { success: true });
        await waitFor(a, 'newMessage');
        const joined = await ack(c, 'joinRoom', { code });
        assert.equal(joined.success, true);
        assert.deepEqual(
          joined.messages.map((m) => m.text),
          ['alone'],
        );
        assert.deepEqual(await waitFor(a, 'userJoined'), { userId: c.id });
        await assertReceived([
          [a, ['userJoined', 'userLeft', 'newMessage', 'userJoined']],
          [c, []],
        ]);
      });

      it('the last member disconnecting deletes the room', async (t) => {
        const client = clients(t, URL, transport);
        const a = await client();
        const code = await createRoom(a);
        a.disconnect();
        // The server handles the disconnect on its own time: a probe that joins before it did
        // becomes the last member, and its own disconnect must delete the room in turn. No
        // leaveRoom anywhere: only disconnects can have deleted it.
        for (let i = 0; ; i++) {
          const probe = await client();
          const reply = await ack(probe, 'joinRoom', { code });
          if (reply.error) {
            assert.deepEqual(reply, { error: 'Room not found' });
            break;
          }
          assert.deepEqual(reply, JOINED_EMPTY);
          probe.disconnect();
          assert.ok(i < 50, 'the room outlived 50 last members');
        }
      });

      it('leaveRoom: success, userLeft to the partner, then the leaver is out', async (t) => {
        const client = clients(t, URL, transport);
        const [a, b] = await Promise.all([client(), client()]);
        const code = await createRoom(a);
        assert.deepEqual(await ack(b, 'joinRoom', { code }), JOINED_EMPTY);
        await waitFor(a, 'userJoined');
        const left = waitFor(a, 'userLeft');
        assert.deepEqual(await ack(b, 'leaveRoom', { code }), { success: true });
        assert.deepEqual(await left, { userId: b.id });
        assert.deepEqual(await ack(b, 'sendMessage', { code, text: 'gone' }), {
          error: 'Not a member of this room',
        });
        assert.deepEqual(await ack(b, 'leaveRoom', { code }), {
          error: 'Not a member of this room',
        });
        assert.deepEqual(await ack(b, 'leaveRoom', {}), { error: 'Invalid room code' });
        // The last member leaving deletes the room at once.
        assert.deepEqual(await ack(a, 'leaveRoom', { code: Number(code) }), { success: true });
        assert.deepEqual(await ack(a, 'leaveRoom', { code }), { error: 'Room not found' });
        assert.deepEqual(await ack(b, 'joinRoom', { code }), { error: 'Room not found' });
        await assertReceived([
          [a, ['userJoined', 'userLeft']],
          [b, []],
        ]);
      });

      it('joining another room leaves the first (the old partner gets userLeft)', async (t) => {
        const client = clients(t, URL, transport);
        const [a, b, c] = await Promise.all([client(), client(), client()]);
        const first = await createRoom(a);
        assert.deepEqual(await ack(b, 'joinRoom', { code: first }), JOINED_EMPTY);
        await waitFor(a, 'userJoined');
        const second = await createRoom(c);
        const left = waitFor(b, 'userLeft');
        const joined = waitFor(c, 'userJoined');
        assert.deepEqual(await ack(a, 'joinRoom', { code: second }), JOINED_EMPTY);
        assert.deepEqual(await left, { userId: a.id });
        assert.deepEqual(await joined, { userId: a.id });
        assert.deepEqual(await ack(a, 'sendMessage', { code: first, text: 'old room' }), {
          error: 'Not a member of this room',
        });
        const got = Promise.all([waitFor(a, 'newMessage'), waitFor(c, 'newMessage')]);
        assert.deepEqual(await ack(a, 'sendMessage', { code: second, text: 'new room' }), {
          success: true,
        });
        for (const m of await got) assertMessage(m, a.id, 'new room');
        await assertReceived([
          [a, ['userJoined', 'newMessage']],
          [b, ['userLeft']],
          [c, ['userJoined', 'newMessage']],
        ]);
      });

      it('createRoom while in a room leaves it (the old partner gets userLeft)', async (t) => {
        const client = clients(t, URL, transport);
        const [a, b] = await Promise.all([client(), client()]);
        const first = await createRoom(a);
        assert.deepEqual(await ack(b, 'joinRoom', { code: first }), JOINED_EMPTY);
        await waitFor(a, 'userJoined');
        const left = waitFor(a, 'userLeft');
        const second = await createRoom(b);
        assert.notEqual(second, first);
        assert.deepEqual(await left, { userId: b.id });
        assert.deepEqual(await ack(b, 'sendMessage', { code: first, text: 'x' }), {
          error: 'Not a member of this room',
        });
        await assertReceived([
          [a, ['userJoined', 'userLeft']],
          [b, []],
        ]);
      });

      it('rejoin after a refresh: a new socket joins with the code, gets the history', async (t) => {
        const client = clients(t, URL, transport);
        const [a, b] = await Promise.all([client(), client()]);
        const code = await createRoom(a);
        assert.deepEqual(await ack(b, 'joinRoom', { code }), JOINED_EMPTY);
        await waitFor(a, 'userJoined');
        const sent = [];
        for (const [from, text] of [
          [a, 'before refresh 1'],
          [b, 'before refresh 2'],
        ]) {
          const got = waitFor(a, 'newMessage');
          assert.deepEqual(await ack(from, 'sendMessage', { code, text }), { success: true });
          sent.push(await got);
        }
        // "Refresh": the page's connection drops without a Socket.IO DISCONNECT (the engine
        // is closed under the socket), and a new socket comes with the code it remembered.
        const oldId = b.id;
        const left = waitFor(a, 'userLeft');
        b.io.engine.close();
        assert.deepEqual(await left, { userId: oldId });
        const b2 = await client();
        assert.notEqual(b2.id, oldId);
        const joined = waitFor(a, 'userJoined');
        assert.deepEqual(await ack(b2, 'joinRoom', { code }), { success: true, messages: sent });
        assert.deepEqual(await joined, { userId: b2.id });
        const got = Promise.all([waitFor(a, 'newMessage'), waitFor(b2, 'newMessage')]);
        assert.deepEqual(await ack(b2, 'sendMessage', { code, text: 'after refresh' }), {
          success: true,
        });
        for (const m of await got) assertMessage(m, b2.id, 'after refresh');
        await assertReceived([
          [a, ['userJoined', 'newMessage', 'newMessage', 'userLeft', 'userJoined', 'newMessage']],
          [b2, ['newMessage']],
        ]);
      });

      it('events emitted without an ack callback still take effect', async (t) => {
        const client = clients(t, URL, transport);
        const [a, b] = await Promise.all([client(), client()]);
        const code = await createRoom(a);
        b.emit('joinRoom', { code });
        assert.deepEqual(await waitFor(a, 'userJoined'), { userId: b.id });
        b.emit('sendMessage', { code, text: 'fire and forget' });
        for (const m of await Promise.all([waitFor(a, 'newMessage'), waitFor(b, 'newMessage')])) {
          assertMessage(m, b.id, 'fire and forget');
        }
        b.emit('bogus', { code }); // unknown, no ack asked: ignored
        b.emit('leaveRoom', { code });
        assert.deepEqual(await waitFor(a, 'userLeft'), { userId: b.id });
        await assertReceived([
          [a, ['userJoined', 'newMessage', 'userLeft']],
          [b, ['newMessage']],
        ]);
      });

      it('an unknown event with an ack is answered Unknown event', async (t) => {
        const client = clients(t, URL, transport);
        const socket = await client();
        assert.deepEqual(await ack(socket, 'deleteEverything', {}), { error: 'Unknown event' });
        // The session is unharmed.
        await createRoom(socket);
      });

      it('roomExpired reaches both members when the TTL passes; the code dies', async (t) => {
        const client = clients(t, EXPIRY_URL, transport);
        const [a, b, c] = await Promise.all([client(), client(), client()]);
        const created = Date.now();
        const code = await createRoom(a);
        assert.deepEqual(await ack(b, 'joinRoom', { code }), JOINED_EMPTY);
        await waitFor(a, 'userJoined');
        assert.deepEqual(await ack(a, 'sendMessage', { code, text: 'soon gone' }), {
          success: true,
        });
        const expired = Promise.all([waitFor(a, 'roomExpired'), waitFor(b, 'roomExpired')]);
        assert.deepEqual(await expired, [{}, {}]);
        // Never early: the server's clock for the room starts after `created` (the ms rounding
        // of two Date.now() readings aside).
        const elapsed = Date.now() - created;
        assert.ok(elapsed >= 1499, `expired after ${elapsed} ms, the TTL is 1500 ms`);
        for (const s of [a, b, c]) {
          assert.deepEqual(await ack(s, 'joinRoom', { code }), { error: 'Room not found' });
        }
        assert.deepEqual(await ack(a, 'sendMessage', { code, text: 'too late' }), {
          error: 'Room not found',
        });
        assert.deepEqual(await ack(b, 'leaveRoom', { code }), { error: 'Room not found' });
        // The members are free again: a new room works.
        const fresh = await createRoom(b);
        assert.deepEqual(await ack(a, 'joinRoom', { code: fresh }), JOINED_EMPTY);
        await waitFor(b, 'userJoined');
        await assertReceived([
          [a, ['userJoined', 'newMessage', 'roomExpired']],
          [b, ['newMessage', 'roomExpired', 'userJoined']],
          [c, []],
        ]);
      });

      it('stays connected across several heartbeats (pingInterval 250 ms)', async (t) => {
        const client = clients(t, EXPIRY_URL, transport);
        const [a, b] = await Promise.all([client(), client()]);
        const ids = [a.id, b.id];
        let pings = 0;
        a.io.on('ping', () => pings++);
        // Past the server's pingInterval + pingTimeout: a missed ping or pong would have closed
        // the session by now.
        await sleep(1400);
        assert.ok(pings >= 3, `only ${pings} pings in 1400 ms`);
        assert.deepEqual([a.id, b.id], ids);
        assert.equal(transportName(a), transport.final);
        assert.equal(transportName(b), transport.final);
        const code = await createRoom(a);
        assert.deepEqual(await ack(b, 'joinRoom', { code }), JOINED_EMPTY);
        const got = Promise.all([waitFor(a, 'newMessage'), waitFor(b, 'newMessage')]);
        assert.deepEqual(await ack(b, 'sendMessage', { code, text: 'still here' }), {
          success: true,
        });
        for (const m of await got) assertMessage(m, b.id, 'still here');
        await assertReceived([
          [a, ['userJoined', 'newMessage']],
          [b, ['newMessage']],
        ]);
      });

      if (transport.upgrade) {
        it('events sent before the upgrade completes are not lost or reordered', async (t) => {
          const client = clients(t, URL, transport);
          const a = await client();
          const code = await createRoom(a);
          // Join and send a burst the moment the WebSocket probe succeeded, while polling is
          // being paused and writes are buffered. A client whose upgrade is over before the
          // test gets there misses that window: another one is tried.
          let b;
          for (let attempt = 0; ; attempt++) {
            b = await client({ waitUpgrade: false });
            if (transportName(b) === 'polling') await b.upgrading;
            if (transportName(b) === 'polling' && b.io.engine.upgrading) break;
            b.disconnect();
            assert.ok(attempt < 10, 'the upgrade window was never hit');
          }
          const texts = Array.from({ length: 20 }, (_, i) => `during upgrade ${i}`);
          const delivered = Promise.all(texts.map(() => waitFor(a, 'newMessage')));
          const joined = ack(b, 'joinRoom', { code });
          const acks = Promise.all(texts.map((text) => ack(b, 'sendMessage', { code, text })));
          assert.deepEqual(await joined, JOINED_EMPTY);
          assert.ok(
            (await acks).every((r) => r.success === true),
            JSON.stringify(await acks),
          );
          assert.equal(await b.upgraded, 'websocket');
          assert.equal(transportName(b), 'websocket');
          const got = (await delivered).map((m) => m.text);
          assert.deepEqual(got, texts);
          const burst = texts.map(() => 'newMessage');
          await assertReceived([
            [a, ['userJoined', ...burst]],
            [b, burst],
          ]);
        });
      }
    });
  }
});

describe('across transports', () => {
  it('a polling-only member and a websocket-only member chat with each other', async (t) => {
    const [polling, websocket] = [TRANSPORTS[2], TRANSPORTS[1]];
    const p = await clients(t, URL, polling)();
    const w = await clients(t, URL, websocket)();
    assert.equal(transportName(p), 'polling');
    assert.equal(transportName(w), 'websocket');
    const code = await createRoom(p);
    const joined = waitFor(p, 'userJoined');
    assert.deepEqual(await ack(w, 'joinRoom', { code }), JOINED_EMPTY);
    assert.deepEqual(await joined, { userId: w.id });
    for (const [from, text] of [
      [p, 'from polling'],
      [w, 'from websocket'],
    ]) {
      const got = Promise.all([waitFor(p, 'newMessage'), waitFor(w, 'newMessage')]);
      assert.deepEqual(await ack(from, 'sendMessage', { code, text }), { success: true });
      for (const m of await got) assertMessage(m, from.id, text);
    }
    const pId = p.id;
    const left = waitFor(w, 'userLeft');
    p.disconnect();
    assert.deepEqual(await left, { userId: pId });
    await assertReceived([[w, ['newMessage', 'newMessage', 'userLeft']]]);
  });
});

describe('HTTP', () => {
  it('GET /health answers {status:"ok", timestamp}', async () => {
    const before = Date.now();
    const res = await fetch(new globalThis.URL('/health', URL));
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /^application\/json/);
    const body = await res.json();
    assert.deepEqual(Object.keys(body).sort(), ['status', 'timestamp']);
    assert.equal(body.status, 'ok');
    assert.ok(Number.isInteger(body.timestamp));
    assert.ok(Math.abs(body.timestamp - before) < 10_000, `timestamp ${body.timestamp}`);
  });

  it('a polling handshake from a browser origin may be read by it (Access-Control-Allow-Origin: *)', async () => {
    const origin = 'http://example.test';
    const url = new globalThis.URL('/socket.io/?EIO=4&transport=polling', URL);
    const res = await fetch(url, { headers: { Origin: origin } });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('access-control-allow-origin'), '*');
    assert.equal(res.headers.get('access-control-allow-credentials'), null);
    const body = await res.text();
    assert.equal(body[0], '0', `an Engine.IO open packet: ${body}`);
    const open = JSON.parse(body.slice(1));
    assert.equal(typeof open.sid, 'string');
    assert.deepEqual(open.upgrades, ['websocket']);
    assert.equal(typeof open.pingInterval, 'number');
    assert.equal(typeof open.pingTimeout, 'number');
    assert.equal(typeof open.maxPayload, 'number');
    // Close the half-made session instead of leaving it to time out.
    const close = await fetch(
      new globalThis.URL(`/socket.io/?EIO=4&transport=polling&sid=${open.sid}`, URL),
      { method: 'POST', body: '1', headers: { Origin: origin } },
    );
    assert.equal(close.status, 200);
    assert.equal(close.headers.get('access-control-allow-origin'), '*');
    await close.text();
  });

  it("a keep-alive agent's requests that ask for close are all answered (as node-fetch sends them)", async () => {
    // Node's agent puts a socket back in its pool unless the answer says `Connection: close`;
    // the next queued request then goes out on a socket the server is closing: "socket hang up".
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const get = (path) =>
      new Promise((resolve, reject) => {
        const options = { agent, headers: { Connection: 'close' } };
        const req = http.request(new globalThis.URL(path, URL), options, (res) => {
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (d) => (body += d));
          res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body }));
        });
        req.on('error', reject);
        req.end();
      });
    try {
      const paths = ['/health', '/nope', '/socket.io/?EIO=4&transport=polling', '/health'];
      const answers = await Promise.all([...paths, ...paths].map(get));
      assert.deepEqual(
        answers.map((a) => [a.status, a.headers.connection]),
        [200, 404, 200, 200, 200, 404, 200, 200].map((status) => [status, 'close']),
      );
      assert.equal(JSON.parse(answers[0].body).status, 'ok');
    } finally {
      agent.destroy();
    }
  });

  it('a CORS preflight for the polling endpoint is allowed', async () => {
    const origin = 'http://example.test';
    const url = new globalThis.URL('/socket.io/?EIO=4&transport=polling', URL);
    const res = await fetch(url, {
      method: 'OPTIONS',
      headers: {
        Origin: origin,
        'Access-Control-Request-Method': 'POST',
        'Access-Control-Request-Headers': 'content-type',
      },
    });
    await res.arrayBuffer();
    assert.equal(res.status, 204);
    assert.equal(res.headers.get('access-control-allow-origin'), '*');
    assert.equal(res.headers.get('access-control-allow-credentials'), null);
    assert.match(res.headers.get('access-control-allow-methods') ?? '', /POST/);
  });
});
