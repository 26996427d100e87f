// The example page (examples/web/) in headless Chromium: two people, each in their own browser
// context, create a room, join it, chat both ways and part; and `?client=` loads only a path on
// the page's own origin. Run by `cargo test --test browser`,
// which starts pairchat and sets PAIRCHAT_URL, CHROMIUM (the browser binary) and ARTIFACTS_DIR
// (where the screenshot goes).
//
// The page is served by a small static server on its own port, so it is another origin than
// pairchat: default transports make the browser long-poll cross-origin (CORS) and then upgrade
// to WebSocket. The client bundle comes from node_modules (`?client=`), not the CDN.

import assert from 'node:assert/strict';
import { readFileSync, readdirSync, mkdirSync } from 'node:fs';
import { createServer } from 'node:http';
import { dirname, extname, join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

const HERE = dirname(fileURLToPath(import.meta.url));
const WEB_DIR = join(HERE, '..', '..', 'examples', 'web');
const CLIENT_BUNDLE = join(HERE, 'node_modules', 'socket.io-client', 'dist', 'socket.io.min.js');
const PAIRCHAT_URL = requireEnv('PAIRCHAT_URL');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const ARTIFACTS_DIR = process.env.ARTIFACTS_DIR || join(HERE, '..', '..', 'target', 'browser-artifacts');

/** How long to wait for anything the page should show. */
const WAIT_MS = 15_000;
const TYPES = { '.html': 'text/html', '.js': 'text/javascript', '.css': 'text/css' };

function requireEnv(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set (run the test with \`cargo test --test browser\`)`);
  return value;
}

/** Serves examples/web/ and the client bundle (as /socket.io.min.js) on 127.0.0.1 and a free
 *  port; resolves with its origin and a function that stops it. */
async function serveStatic() {
  const files = new Map(readdirSync(WEB_DIR).map((name) => [`/${name}`, join(WEB_DIR, name)]));
  files.set('/', join(WEB_DIR, 'index.html'));
  files.set('/socket.io.min.js', CLIENT_BUNDLE);
  const server = createServer((req, res) => {
    const file = files.get(new URL(req.url, 'http://x').pathname);
    if (req.method !== 'GET' || !file) {
      res.writeHead(404).end();
      return;
    }
    const type = TYPES[extname(file)] ?? 'application/octet-stream';
    res.writeHead(200, { 'content-type': `${type}; charset=utf-8`, 'cache-control': 'no-store' });
    res.end(readFileSync(file));
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  return {
    origin: `http://127.0.0.1:${port}`,
    close: () => {
      server.closeAllConnections();
      return new Promise((resolve) => server.close(resolve));
    },
  };
}

/** Headless Chromium. */
function launch() {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
    timeout: 60_000,
  });
}

/** A page in its own browser context that records its errors and its traffic to pairchat. */
async function openPage(browser, url) {
  const context = await browser.newContext({ viewport: { width: 640, height: 760 } });
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT_MS);
  const seen = { errors: [], polling: [], websockets: [] };
  page.on('pageerror', (err) => seen.errors.push(`pageerror: ${err.message}`));
  page.on('console', (msg) => {
    if (msg.type() === 'error') seen.errors.push(`console: ${msg.text()}`);
  });
  page.on('requestfailed', (req) => {
    // Requests still in flight when a page closes are aborted; anything else is a failure.
    if (!page.isClosed()) seen.errors.push(`request failed: ${req.url()} ${req.failure()?.errorText}`);
  });
  page.on('request', (req) => {
    if (req.url().startsWith(PAIRCHAT_URL) && req.url().includes('transport=polling')) {
      seen.polling.push(req.url());
    }
  });
  page.on('websocket', (ws) => seen.websockets.push(ws.url()));
  await page.goto(url);
  return { context, page, seen };
}

/** Waits until the element with `testId` shows `text` (a string it contains, or a RegExp). */
async function waitForText(page, testId, text) {
  await page.getByTestId(testId).filter({ hasText: text }).waitFor();
}

/** Waits for a message bubble with exactly `text`, `from` "me" or "partner". */
async function waitForMessage(page, text, from) {
  const bubble = page
    .locator(`[data-testid="message"][data-from="${from}"]`)
    .filter({ has: page.locator('p', { hasText: new RegExp(`^${escapeRegExp(text)}$`) }) });
  await bubble.waitFor();
  assert.match(await bubble.locator('time').innerText(), /\d/, `"${text}" shows a time`);
}

function escapeRegExp(text) {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

test('two people chat through the example page in headless Chromium', async (t) => {
  const site = await serveStatic();
  t.after(site.close);
  assert.notEqual(new URL(site.origin).origin, new URL(PAIRCHAT_URL).origin);

  const browser = await launch();
  t.after(() => browser.close());

  const url = `${site.origin}/index.html?${new URLSearchParams({
    server: PAIRCHAT_URL,
    client: '/socket.io.min.js',
  })}`;
  const a = await openPage(browser, url);
  const b = await openPage(browser, url);

  // Both connect with default transports: long-polling (cross-origin), then WebSocket.
  for (const { page, seen } of [a, b]) {
    await waitForText(page, 'connection', 'Connected · websocket');
    assert.ok(seen.polling.length > 0, 'the client long-polled before upgrading');
    assert.ok(
      seen.websockets.some((ws) => ws.startsWith(PAIRCHAT_URL.replace(/^http/, 'ws'))),
      `a WebSocket to pairchat was opened: ${seen.websockets}`,
    );
  }

  // A creates a room and sees its code.
  await a.page.getByTestId('create').click();
  await a.page.getByTestId('chat').waitFor();
  const code = await a.page.getByTestId('room-code').innerText();
  assert.match(code, /^\d{6}$/);
  await waitForText(a.page, 'status', 'Waiting for your partner');

  // B first mistypes the code: the ack's error is shown and B stays in the lobby.
  await b.page.getByTestId('join-code').fill('12345');
  await b.page.getByTestId('join').click();
  await waitForText(b.page, 'error', 'Invalid room code');
  assert.equal(await b.page.getByTestId('lobby').isVisible(), true);

  // B joins with the right code (Enter submits); A is told.
  await b.page.getByTestId('join-code').fill(code);
  await b.page.getByTestId('join-code').press('Enter');
  await b.page.getByTestId('chat').waitFor();
  assert.equal(await b.page.getByTestId('error').isVisible(), false, 'a success clears the error');
  assert.equal(await b.page.getByTestId('room-code').innerText(), code);
  await waitForText(a.page, 'status', 'Your partner joined');

  // Messages both ways, each on both pages, styled by who sent it.
  await a.page.getByTestId('message-input').fill('Hello from A');
  await a.page.getByTestId('send').click();
  await waitForMessage(a.page, 'Hello from A', 'me');
  await waitForMessage(b.page, 'Hello from A', 'partner');
  assert.equal(await a.page.getByTestId('message-input').inputValue(), '', 'the box is cleared');

  await b.page.getByTestId('message-input').fill('Hi A, B here — ça va?');
  await b.page.getByTestId('message-input').press('Enter');
  await waitForMessage(b.page, 'Hi A, B here — ça va?', 'me');
  await waitForMessage(a.page, 'Hi A, B here — ça va?', 'partner');

  await a.page.getByTestId('message-input').fill('<b>not bold</b>');
  await a.page.getByTestId('send').click();
  await waitForMessage(b.page, '<b>not bold</b>', 'partner'); // text, never markup
  for (const { page } of [a, b]) {
    assert.equal(await page.getByTestId('message').count(), 3);
  }

  // B closes the page: A sees the partner leave.
  await b.context.close();
  await waitForText(a.page, 'status', 'Your partner left the chat.');

  mkdirSync(ARTIFACTS_DIR, { recursive: true });
  const screenshot = join(ARTIFACTS_DIR, 'chat.png');
  await a.page.screenshot({ path: screenshot });
  t.diagnostic(`screenshot: ${screenshot}`);

  // A leaves too (emits leaveRoom) and is back in the lobby, still connected.
  await a.page.getByTestId('leave').click();
  await a.page.getByTestId('lobby').waitFor();
  await waitForText(a.page, 'status', `You left room ${code}.`);
  await waitForText(a.page, 'connection', 'Connected · websocket');
  assert.equal(await a.page.getByTestId('error').isVisible(), false);

  assert.deepEqual(a.seen.errors, [], 'page A logged no errors');
  assert.deepEqual(b.seen.errors, [], 'page B logged no errors');
  await a.context.close();
});

// A hosted copy of the page must not run a script a crafted link names: `?client=` takes only a
// path on the page's own origin; anything else falls back to the pinned CDN bundle. Requests to
// anywhere but the page's origin and pairchat are recorded and aborted (so the fallback fails to
// load, and says so).
test('?client= loads only a path on the page\'s own origin', async (t) => {
  const site = await serveStatic();
  t.after(site.close);
  const browser = await launch();
  t.after(() => browser.close());
  const context = await browser.newContext();
  const elsewhere = [];
  await context.route('**/*', (route) => {
    const url = route.request().url();
    if (url.startsWith(`${site.origin}/`) || url.startsWith(PAIRCHAT_URL)) return route.continue();
    elsewhere.push(url);
    return route.abort();
  });

  const cdn = 'https://cdn.socket.io/4.8.1/socket.io.min.js';
  const refused = [
    'https://evil.example/x.js',
    '//evil.example/x.js',
    '/\\evil.example/x.js',
    '/\t/evil.example/x.js',
    'javascript:alert(1)',
    'data:text/javascript,window.io=1',
    'socket.io.min.js',
  ];
  for (const client of refused) {
    elsewhere.length = 0;
    const page = await context.newPage();
    await page.goto(`${site.origin}/index.html?${new URLSearchParams({ server: PAIRCHAT_URL, client })}`);
    await waitForText(page, 'error', 'Could not load socket.io-client from');
    assert.deepEqual(elsewhere, [cdn], `?client=${JSON.stringify(client)} falls back to the CDN`);
    await page.close();
  }

  // A path on the page's origin is loaded (the chat test above runs on one too).
  elsewhere.length = 0;
  const page = await context.newPage();
  await page.goto(`${site.origin}/index.html?${new URLSearchParams({ server: PAIRCHAT_URL, client: '/socket.io.min.js' })}`);
  await waitForText(page, 'connection', 'Connected');
  assert.deepEqual(elsewhere, [], 'nothing is loaded from elsewhere');
  await context.close();
});
