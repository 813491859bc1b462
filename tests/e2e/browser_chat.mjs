// Drives the demo client (examples/client) in headless Debian Chromium
// against a running Herald stack. Started by test_browser.py, which passes
// the endpoints in the environment; prints one JSON line per step
// ({"step","ok","ms"} or {"step","ok":false,"error"}) and asks the Python
// side for actions it cannot do itself with {"request": ...} lines, reading
// the answer ("done") from stdin.
import { chromium } from 'playwright-core';
import { createInterface } from 'node:readline';
import { appendFileSync, mkdirSync } from 'node:fs';
import path from 'node:path';

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};
const CLIENT = env('E2E_CLIENT_URL'); // http://127.0.0.1:P/ serving examples/client/dist
const GW = [env('E2E_GATEWAY1'), env('E2E_GATEWAY2')]; // ws://127.0.0.1:P
const HISTORY = env('E2E_HISTORY'); // http://127.0.0.1:P
const INGEST = env('E2E_INGEST'); // http://127.0.0.1:P
const INGEST_KEY = env('E2E_INGEST_KEY'); // the stack's ingest API key
const ALICE_TTL = env('E2E_ALICE_TTL'); // seconds: alice's pages mint short-lived tokens
const OUT = env('E2E_OUT_DIR');
const BOB_SEED = env('E2E_BOB_SEED'); // message of a notification stored before bob's page opens
const TIMEOUT = 15000;

const emit = (o) => process.stdout.write(`${JSON.stringify(o)}\n`);
const stdinLines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
async function request(what) {
  emit({ request: what });
  const { value, done } = await stdinLines.next();
  if (done || value.trim() !== 'done') throw new Error(`request ${what}: got ${done ? 'EOF' : value}`);
}

// With $HERALD_CONTRACT_WS_LOG (CTest sets it), every data frame of every
// page's WebSockets is recorded as tests/integration/herald_contract_log.py
// records WsClient's, for tests/contract/validate-ws-traffic.mjs. Close codes
// are not: Playwright does not report them, and the page's own record of
// them cannot tell whose close it was.
const WS_LOG = process.env.HERALD_CONTRACT_WS_LOG;
let currentStep = null;
let wsConns = 0;
function recordSockets(page) {
  if (!WS_LOG) return;
  mkdirSync(path.dirname(WS_LOG), { recursive: true });
  page.on('websocket', (ws) => {
    const u = new URL(ws.url());
    const state = { conn: `${process.pid}-${++wsConns}`, port: Number(u.port), path: u.pathname, seq: 0 };
    const rec = (from, payload) => {
      const text = typeof payload === 'string';
      appendFileSync(WS_LOG, `${JSON.stringify({
        test: 'test_browser.py', check: currentStep, ...state, seq: ++state.seq, from, opcode: text ? 1 : 2,
        payload: text ? { text: payload } : { base64: Buffer.from(payload).toString('base64') },
      })}\n`);
    };
    ws.on('framereceived', (f) => rec('server', f.payload));
    ws.on('framesent', (f) => rec('client', f.payload));
  });
}

let failed = 0;
async function step(name, fn) {
  const t0 = Date.now();
  currentStep = name;
  try {
    await fn();
    emit({ step: name, ok: true, ms: Date.now() - t0 });
    return true;
  } catch (e) {
    failed += 1;
    emit({ step: name, ok: false, error: String(e && e.stack ? e.stack : e) });
    return false;
  }
}

// Polls fn until it returns a truthy value; the error says what was last seen.
async function until(what, fn, timeout = TIMEOUT) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last && last.ok !== false) return last;
    } catch (e) {
      last = e.message;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; last: ${JSON.stringify(last)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const url = (gw, user, ttl) => {
  const q = new URLSearchParams({ gateway: gw, history: HISTORY });
  if (user) q.set('user', user);
  if (ttl) q.set('ttl', ttl);
  return `${CLIENT}?${q}`;
};
// What the test itself reads from history, with a token history minted (history.dev_mint).
async function historyGet(path, user, rooms) {
  const t = await fetch(`${HISTORY}/dev/token`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(rooms ? { user_id: user, rooms } : { user_id: user }),
  });
  if (t.status !== 200) throw new Error(`POST /dev/token answered ${t.status}: ${await t.text()}`);
  const { token } = await t.json();
  const r = await fetch(`${HISTORY}${path}`, { headers: { Authorization: `Bearer ${token}` } });
  if (r.status !== 200) throw new Error(`GET ${path} answered ${r.status}: ${await r.text()}`);
  return r.json();
}
const badge = (page) => page.getByTestId('unread-badge').textContent();
const status = (page) => page.getByTestId('connection-status').getAttribute('data-state');
const chatTexts = (page) => page.getByTestId('chat-text').allTextContents();
const chatEvents = (page) => page.getByTestId('chat-event').allTextContents();
const presence = (page) => page.getByTestId('presence-user').allTextContents();
const joined = async (page) => (await page.getByTestId('chat-state').getAttribute('data-joined')) === 'true';

async function badgeIs(page, n, who) {
  await until(`${who}'s badge to be ${n}`, async () => {
    const b = await badge(page);
    return b === String(n) || { ok: false, badge: b };
  });
}

async function publish(page, text) {
  await page.getByTestId('message-input').fill(text);
  await page.getByTestId('send-button').click();
}

const browser = await chromium.launch({
  executablePath: process.env.E2E_CHROMIUM || '/usr/bin/chromium',
  headless: true,
  // Playwright gives every launch a fresh, temporary --user-data-dir.
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
         '--disable-sync', '--disable-quic', '--no-first-run'],
});
const pageErrors = [];
const sockets = new Map(); // page -> number of WebSockets it opened
// Every page records the close code of each of its WebSockets (page state the
// test reads back: a drain must close with 1001, not merely drop the socket).
const RECORD_CLOSES = () => {
  const Native = window.WebSocket;
  window.__wsCloses = [];
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      this.addEventListener('close', (e) => window.__wsCloses.push(e.code));
    }
  };
};
const closeCodes = (page) => page.evaluate(() => window.__wsCloses.slice());

async function open(name, gw, user, ttl) {
  const page = await browser.newPage({ viewport: { width: 1100, height: 720 } });
  await page.addInitScript(RECORD_CLOSES);
  page.setDefaultTimeout(TIMEOUT);
  page.on('pageerror', (e) => pageErrors.push(`${name}: ${e.message}`));
  page.on('websocket', () => sockets.set(page, (sockets.get(page) || 0) + 1));
  recordSockets(page);
  await page.goto(url(gw, user, ttl));
  return page;
}

let alice, alice2, bob;
const notifyText = `Your order #${Date.now() % 100000} has shipped`;
let notifId;

try {
  await step('pages open: alice on gateway 1, a second alice tab and bob on gateway 2', async () => {
    alice = await open('alice', GW[0], 'alice', ALICE_TTL);
    alice2 = await open('alice2', GW[1], 'alice');
    bob = await open('bob', GW[1], null); // bob signs in through the form
    await bob.getByTestId('user-input').fill('bob');
    await bob.getByTestId('connect-button').click();
    for (const [p, who] of [[alice, 'alice'], [alice2, 'alice2'], [bob, 'bob']]) {
      await until(`${who} to connect`, async () => (await status(p)) === 'open');
    }
  });

  await step('bob\'s inbox starts from history (seeded notification, badge 1)', async () => {
    await bob.getByTestId('notification-message').filter({ hasText: BOB_SEED }).waitFor();
    await badgeIs(bob, 1, 'bob');
    await badgeIs(alice, 0, 'alice');
  });

  await step('alice and bob join "lobby"; alice sees bob join and both in presence', async () => {
    await alice.getByTestId('room-input').fill('lobby');
    await alice.getByTestId('join-button').click();
    await until('alice joined', () => joined(alice));
    await bob.getByTestId('room-input').fill('lobby');
    await bob.getByTestId('join-button').click();
    await until('bob joined', () => joined(bob));
    await until('"bob joined" event on alice\'s page', async () => (await chatEvents(alice)).includes('bob joined'));
    await until('presence on alice\'s page', async () => {
      const p = await presence(alice);
      return (p.includes('alice') && p.includes('bob')) || { ok: false, p };
    });
    await until('presence on bob\'s page', async () => {
      const p = await presence(bob);
      return (p.includes('alice') && p.includes('bob')) || { ok: false, p };
    });
  });

  await step('alice publishes; bob (other gateway) and alice see it', async () => {
    await publish(alice, 'hello from alice');
    await until('message on bob\'s page', async () => (await chatTexts(bob)).includes('hello from alice'));
    await until('own message on alice\'s page', async () => (await chatTexts(alice)).includes('hello from alice'));
    const from = await bob.getByTestId('chat-message').last().getAttribute('data-from');
    if (from !== 'alice') throw new Error(`message from ${from}`);
  });

  await step('bob publishes; alice sees it', async () => {
    await publish(bob, 'hi alice, bob here');
    await until('message on alice\'s page', async () => (await chatTexts(alice)).includes('hi alice, bob here'));
  });

  await step('a notification POSTed to ingest appears live in both alice tabs, badge 1', async () => {
    const res = await fetch(`${INGEST}/notifications`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${INGEST_KEY}` },
      body: JSON.stringify({ user_id: 'alice', type: 'order.shipped', message: notifyText, data: { order: 1 } }),
    });
    if (res.status !== 202) throw new Error(`ingest answered ${res.status}: ${await res.text()}`);
    notifId = (await res.json()).id;
    for (const [p, who] of [[alice, 'alice'], [alice2, 'alice2']]) {
      await p.locator(`[data-testid="notification-item"][data-id="${notifId}"]`).waitFor();
      await badgeIs(p, 1, who);
    }
    const text = await alice.locator(`[data-id="${notifId}"] [data-testid="notification-message"]`).textContent();
    if (text !== notifyText) throw new Error(`shows ${text}`);
  });

  await step('clicking it marks it read: badge 0 here, and in the other tab via the live read frame', async () => {
    // The worker stores the notification asynchronously; history answers 404
    // until it has, and the client then reloads the inbox. Wait for it first.
    await until('the notification in history', async () => {
      const page = await historyGet('/notifications?status=unread', 'alice');
      return page.items.some((n) => n.id === notifId);
    });
    await alice.locator(`[data-testid="notification-item"][data-id="${notifId}"]`).click();
    await badgeIs(alice, 0, 'alice');
    await badgeIs(alice2, 0, 'alice2');
    const read = await alice2.locator(`[data-testid="notification-item"][data-id="${notifId}"]`).getAttribute('data-read');
    if (read !== 'true') throw new Error(`alice2 item data-read=${read}`);
  });

  await step('gateway 2 drains (1001) and restarts: bob and alice2 reconnect, bob rejoins lobby', async () => {
    const before = [sockets.get(bob), sockets.get(alice2)];
    const closesBefore = [(await closeCodes(bob)).length, (await closeCodes(alice2)).length];
    await request('restart_gateway2');
    for (const [p, who, n] of [[bob, 'bob', closesBefore[0]], [alice2, 'alice2', closesBefore[1]]]) {
      const codes = await until(`${who}'s socket to close`, async () => {
        const c = (await closeCodes(p)).slice(n);
        return c.length > 0 ? c : { ok: false, c };
      });
      if (codes[0] !== 1001) throw new Error(`${who}'s socket closed with ${codes[0]}, wanted 1001 (drain)`);
    }
    await until('bob to open a new socket', async () => sockets.get(bob) > before[0] && (await status(bob)) === 'open', 30000);
    await until('alice2 to open a new socket', async () => sockets.get(alice2) > before[1] && (await status(alice2)) === 'open', 30000);
    await until('bob rejoined', () => joined(bob));
    await publish(alice, 'welcome back bob');
    await until('message after reconnect on bob\'s page', async () => (await chatTexts(bob)).includes('welcome back bob'));
  });

  await step('bob leaves: alice sees "bob left" and presence without bob', async () => {
    const lefts = (await chatEvents(alice)).filter((e) => e === 'bob left').length;
    await bob.getByTestId('leave-button').click();
    await until('"bob left" event', async () => (await chatEvents(alice)).filter((e) => e === 'bob left').length > lefts);
    await until('presence without bob', async () => !(await presence(alice)).includes('bob'));
  });

  await step('bob rejoins: his log is refilled from history and alice sees him join again', async () => {
    const all = ['hello from alice', 'hi alice, bob here', 'welcome back bob'];
    const joins = (await chatEvents(alice)).filter((e) => e === 'bob joined').length;
    // The worker stores chat asynchronously: wait until history has it all.
    await until('the chat in history', async () => {
      const stored = (await historyGet('/rooms/lobby/messages', 'bob', ['lobby'])).items.map((m) => m.message);
      return all.every((m) => stored.includes(m)) || { ok: false, stored };
    });
    await bob.getByTestId('join-button').click();
    await until('bob joined again', () => joined(bob));
    await until('room history on bob\'s page', async () => {
      const texts = await chatTexts(bob);
      return all.every((m) => texts.includes(m)) || { ok: false, texts };
    });
    await until('another "bob joined" on alice\'s page', async () =>
      (await chatEvents(alice)).filter((e) => e === 'bob joined').length > joins);
  });

  await step(`alice's socket refreshes its ${ALICE_TTL} s token before it expires and stays open`, async () => {
    const opened = sockets.get(alice);
    // `refreshed` answers counted by the page (data-refreshes); two means a refreshed token was refreshed again.
    await until('two refreshes on alice\'s page', async () => {
      const n = Number(await alice.getByTestId('token-state').getAttribute('data-refreshes'));
      return n >= 2 || { ok: false, refreshes: n };
    }, Number(ALICE_TTL) * 3000);
    const codes = await closeCodes(alice);
    if (codes.length) throw new Error(`alice's socket closed (${codes.join(',')}), e.g. 4001 = token expired`);
    if (sockets.get(alice) !== opened) throw new Error('alice opened another socket instead of refreshing');
    // Still live on the refreshed token: bob's message reaches her.
    await publish(bob, 'still there alice?');
    await until('message on alice\'s page after refreshes', async () => (await chatTexts(alice)).includes('still there alice?'));
  });

  await step('no uncaught errors in the pages', async () => {
    if (pageErrors.length) throw new Error(pageErrors.join('\n'));
  });
} finally {
  mkdirSync(OUT, { recursive: true });
  for (const [p, name] of [[alice, 'alice'], [alice2, 'alice2'], [bob, 'bob']]) {
    if (!p) continue;
    const file = path.join(OUT, `${name}.png`);
    await p.screenshot({ path: file, fullPage: true }).then(() => emit({ screenshot: file }), () => {});
  }
  await browser.close();
}
process.exit(failed ? 1 : 0);
