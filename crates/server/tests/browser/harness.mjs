// Test harness for the agent panel's browser tests: starts the REAL `cxbridge` binary on a
// fresh data directory, talks to its HTTP API like a PBX and an administrator would, and
// drives the panel in headless Chromium through playwright-core.
//
// Environment:
//   CXBRIDGE_BIN            the binary (default: target/debug/cxbridge under the repo root)
//   CXBRIDGE_CHROMIUM       Chromium (default: /usr/bin/chromium)
//   CXBRIDGE_REQUIRE_PEERS  1: a missing binary or browser fails the tests instead of skipping them
//   CXBRIDGE_BROWSER_ARTIFACTS  directory for screenshots of failed tests (default: a temp dir)

import { spawn, execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import test from 'node:test';
import { fileURLToPath } from 'node:url';

export const HERE = path.dirname(fileURLToPath(import.meta.url));
export const REPO_ROOT = path.resolve(HERE, '../../../..');
export const BIN = process.env.CXBRIDGE_BIN ? path.resolve(process.env.CXBRIDGE_BIN) : path.join(REPO_ROOT, 'target/debug/cxbridge');
export const CHROMIUM = process.env.CXBRIDGE_CHROMIUM || '/usr/bin/chromium';
export const REQUIRE_PEERS = process.env.CXBRIDGE_REQUIRE_PEERS === '1';

export const ADMIN = 'admin-secret-0123456789';
export const CTI = 'cti-secret-0123456789';
export const ALICE = { id: 'alice', name: 'Alice Example', password: 'correct horse battery staple', token: 'alice-token' };
export const BOB = { id: 'bob', name: 'Bob Builder', token: 'bob-token' };
export const DIALED = '+14155550000';

export const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

// ---------------------------------------------------------------------------------------------
// Prerequisites: skip (or, under CXBRIDGE_REQUIRE_PEERS=1, fail) when something is missing.

let playwright = null;
let playwrightError = null;
try {
  playwright = await import('playwright-core');
} catch (e) {
  playwrightError = e;
}

function isExecutable(file) {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}

export const MISSING = (() => {
  const missing = [];
  if (!isExecutable(BIN)) missing.push(`the cxbridge binary (${BIN}; build it with \`cargo build -p cxbridge-server --bin cxbridge\` or set CXBRIDGE_BIN)`);
  if (!isExecutable(CHROMIUM)) missing.push(`Chromium (${CHROMIUM}; apt-get install chromium, or set CXBRIDGE_CHROMIUM)`);
  if (!playwright) missing.push(`playwright-core (npm ci --prefix crates/server/tests/browser): ${playwrightError?.message}`);
  return missing.length ? `missing ${missing.join('; ')}` : null;
})();

let skipNoticePrinted = false;

/**
 * A browser test. `fn(env)` gets an {@link Env}: servers and pages it opens are stopped and
 * closed afterwards; when the test fails, the servers' stderr and the pages' console are
 * printed and each page is screenshotted.
 */
export function panelTest(name, fn, { timeout = 60_000 } = {}) {
  if (MISSING) {
    if (REQUIRE_PEERS) {
      return test(name, () => {
        throw new Error(`browser tests cannot run: ${MISSING} (CXBRIDGE_REQUIRE_PEERS=1 makes this a failure)`);
      });
    }
    if (!skipNoticePrinted) {
      skipNoticePrinted = true;
      process.stderr.write(`# cxbridge browser tests SKIPPED: ${MISSING}\n`);
    }
    return test(name, { skip: MISSING }, () => {});
  }
  return test(name, { timeout }, async (t) => {
    const env = new Env(name);
    let failed = false;
    try {
      await fn(env, t);
      env.assertNoPageErrors();
    } catch (e) {
      failed = true;
      await env.report(e);
      throw e;
    } finally {
      await env.close(failed);
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Small utilities.

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `fn` until it returns a truthy value (returned) or `timeout` ms pass (throws). */
export async function until(what, fn, { timeout = 5000, interval = 50 } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
      last = v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      const detail = last instanceof Error ? last.message : JSON.stringify(last);
      throw new Error(`timed out after ${timeout} ms waiting for ${what} (last: ${detail})`);
    }
    await sleep(interval);
  }
}

/** Waits until the locator's attribute equals `value` (or satisfies it, when a function). */
export async function waitAttr(locator, name, value, { timeout = 5000, what } = {}) {
  const ok = typeof value === 'function' ? value : (v) => v === value;
  let seen;
  await until(what || `${locator} [${name}] = ${value}`, async () => {
    seen = await locator.getAttribute(name, { timeout: 200 }).catch(() => undefined);
    return ok(seen);
  }, { timeout }).catch((e) => {
    throw new Error(`${e.message}; attribute ${name} was ${JSON.stringify(seen)}`);
  });
  return seen;
}

/** Waits until the locator's text matches `re`. */
export async function waitText(locator, re, { timeout = 5000, what } = {}) {
  let seen;
  await until(what || `${locator} text ~ ${re}`, async () => {
    seen = await locator.innerText({ timeout: 200 }).catch(() => undefined);
    return seen !== undefined && re.test(seen);
  }, { timeout }).catch((e) => {
    throw new Error(`${e.message}; text was ${JSON.stringify(seen)}`);
  });
  return seen;
}

function tomlString(s) {
  return JSON.stringify(String(s)); // a JSON string is a valid TOML basic string for our inputs
}

// ---------------------------------------------------------------------------------------------
// Password hashes come from the binary itself (`cxbridge hash-password`, password on stdin).
// Cached on disk per binary build so each test file does not pay for Argon2 again.

const hashCache = new Map();
export function passwordHash(password) {
  if (hashCache.has(password)) return hashCache.get(password);
  const st = fs.statSync(BIN);
  const key = crypto.createHash('sha256').update(`${BIN}\0${st.size}\0${st.mtimeMs}\0${password}`).digest('hex').slice(0, 24);
  const file = path.join(os.tmpdir(), `cxbridge-browser-hash-${key}`);
  let hash;
  try {
    hash = fs.readFileSync(file, 'utf8').trim();
  } catch {
    hash = execFileSync(BIN, ['hash-password'], { input: `${password}\n`, encoding: 'utf8', timeout: 30_000 }).trim();
    // The hash is the last line the command prints (it may print a hint before it).
    hash = hash.split('\n').map((l) => l.trim()).filter(Boolean).pop();
    if (!hash || !hash.startsWith('$argon2')) throw new Error(`cxbridge hash-password printed no Argon2 hash: ${JSON.stringify(hash)}`);
    fs.writeFileSync(file, hash);
  }
  hashCache.set(password, hash);
  return hash;
}

// ---------------------------------------------------------------------------------------------
// Configuration.

export const WRAPUP_CODES = [
  { code: 'sale', label: 'Sale', category: 'Sales' },
  { code: 'upsell', label: 'Upsell', category: 'Sales' },
  { code: 'callback', label: 'Callback requested', category: 'Service' },
  { code: 'complaint', label: 'Complaint', category: 'Service' },
];

const ENTITIES = {
  contact: `[[crm.entities]]
name = "contact"
title_field = "name"
phone_fields = ["phone", "mobile"]
email_fields = ["email"]
display_fields = [
  { label = "Name", field = "name" },
  { label = "Phone", field = "phone" },
  { label = "Company", field = "company" },
]
`,
  account: `[[crm.entities]]
name = "account"
title_field = "name"
phone_fields = ["phone"]
display_fields = [{ label = "Account", field = "name" }, { label = "Owner", field = "owner" }]
`,
  lead: `[[crm.entities]]
name = "lead"
title_field = "name"
phone_fields = ["phone", "mobile"]
display_fields = [{ label = "Lead", field = "name" }, { label = "Company", field = "company" }]
`,
};

/**
 * The test config. Options:
 *  - entities: built-in CRM entities to declare (default contact, account, lead)
 *  - dynamics: `{cif_library_url, crm_url, cif_version}` for `[panel.dynamics]`, or null
 *  - panel: more `[panel]` keys, e.g. `{ recent_after_secs: 1 }`
 *  - extra: TOML appended at the end
 */
export function configToml({ port, dataDir, entities = ['contact', 'account', 'lead'], dynamics = null, panel = {}, extra = '' }) {
  const dyn = dynamics
    ? `\n[panel.dynamics]\n${Object.entries(dynamics).filter(([, v]) => v !== undefined && v !== null)
      .map(([k, v]) => `${k} = ${typeof v === 'number' ? v : tomlString(v)}`).join('\n')}\n`
    : '';
  const has = (e) => entities.includes(e);
  return `# written by crates/server/tests/browser/harness.mjs
[server]
listen = "127.0.0.1:${port}"
data_dir = ${tomlString(dataDir)}
durability = "normal"

[auth]
admin_tokens = [${tomlString(ADMIN)}]
cti_token = ${tomlString(CTI)}

[phone]
default_region = "US"
own_numbers = [${tomlString(DIALED)}]

[crm]
provider = "builtin"

${entities.map((e) => ENTITIES[e]).join('\n')}
[[agents]]
id = "alice"
name = ${tomlString(ALICE.name)}
cti_users = ["alice"]
numbers = ["201"]
password_hash = ${tomlString(passwordHash(ALICE.password))}
token = ${tomlString(ALICE.token)}
supervisor = true

[[agents]]
id = "bob"
name = ${tomlString(BOB.name)}
cti_users = ["bob"]
numbers = ["202"]
token = ${tomlString(BOB.token)}

[panel]
session_hours = 12
dial_url = "tel:{number}"
${Object.entries(panel).map(([k, v]) => `${k} = ${typeof v === 'number' ? v : tomlString(v)}`).join('\n')}
${dyn}
${WRAPUP_CODES.map((w) => `[[wrapup_codes]]\ncode = ${tomlString(w.code)}\nlabel = ${tomlString(w.label)}\ncategory = ${tomlString(w.category)}\n`).join('\n')}
[[pop_rules]]
match = { queue = "outbound-campaign" }
disabled = true

[[pop_rules]]
match = { queue = "lookup" }
single = "open"
multiple = "search"
none = "search"

[[pop_rules]]
match = {}
single = "open"
multiple = "list"
none = "create"
create_entity = "contact"
prefill = { phone = "{{customer.e164}}" }

[memorialization]
link_pinned = true

[conversations]
acw_timeout_secs = 3600

[outbox]
initial_delay_ms = 200
max_attempts = 3
${has('contact') ? `
[[workflows]]
name = "contact_history"
action = "timeline"
entity = "contact"
limit = 5

[[workflows]]
name = "find_contact"
action = "search"
entity = "contact"
` : ''}${has('lead') ? `
[[workflows]]
name = "new_lead"
action = "create"
entity = "lead"
required = ["name", "phone"]
allowed = ["name", "phone", "company"]
fields = { source = "hotline" }
` : ''}
${extra}
`;
}

// ---------------------------------------------------------------------------------------------
// The server.

const LISTENING = /cxbridge listening on (http:\/\/[^\s]+)/;

export class Server {
  constructor(env, options = {}) {
    this.env = env;
    this.options = options;
    this.dataDir = options.dataDir || fs.mkdtempSync(path.join(os.tmpdir(), 'cxbridge-browser-'));
    this.ownsDataDir = !options.dataDir;
    this.configFile = path.join(this.dataDir, 'cxbridge-test.toml');
    this.logFile = path.join(this.dataDir, 'server-stderr.log');
    this.port = 0;
    this.base = null;
    this.proc = null;
    this.starts = 0;
  }

  /** Rewrites the config (e.g. to change options between restarts); applies at the next start. */
  reconfigure(options) {
    this.options = { ...this.options, ...options };
  }

  async start(port = this.port) {
    fs.writeFileSync(this.configFile, configToml({ ...this.options, port, dataDir: this.dataDir }));
    this.starts += 1;
    const log = fs.openSync(this.logFile, 'a');
    fs.writeSync(log, `\n===== start #${this.starts} (port ${port}) at ${new Date().toISOString()} =====\n`);
    const proc = spawn(BIN, ['serve', '--config', this.configFile], {
      cwd: this.dataDir,
      stdio: ['ignore', 'pipe', log],
      env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'info' },
    });
    fs.closeSync(log);
    this.proc = proc;
    const exited = new Promise((resolve) => {
      proc.once('exit', (code, signal) => resolve({ code, signal }));
      proc.once('error', (e) => resolve({ code: null, signal: null, error: e }));
    });
    this.exited = exited;
    let stdout = '';
    const url = await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`cxbridge did not print "cxbridge listening on" within 20 s; stdout: ${stdout}`)), 20_000);
      proc.stdout.setEncoding('utf8');
      proc.stdout.on('data', (chunk) => {
        stdout += chunk;
        const m = stdout.match(LISTENING);
        if (m) {
          clearTimeout(timer);
          resolve(m[1].replace(/\/$/, ''));
        }
      });
      exited.then(({ code, signal, error }) => {
        clearTimeout(timer);
        reject(new Error(`cxbridge exited (code ${code}, signal ${signal}${error ? `, ${error.message}` : ''}) before listening; stdout: ${stdout}; stderr: ${this.stderrTail()}`));
      });
    });
    this.base = url;
    this.port = Number(new URL(url).port);
    return url;
  }

  /** SIGTERM, and waits for the process to exit (SIGKILL after 10 s). */
  async stop() {
    const proc = this.proc;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) {
      this.proc = null;
      return;
    }
    proc.kill('SIGTERM');
    const timer = setTimeout(() => proc.kill('SIGKILL'), 10_000);
    const r = await this.exited;
    clearTimeout(timer);
    this.proc = null;
    return r;
  }

  /**
   * Starts again on the same data dir, on the same port when it can be bound again (retried
   * briefly), else on a new one. Returns true when the port stayed the same.
   */
  async restart() {
    await this.stop();
    const want = this.port;
    const deadline = Date.now() + 5000;
    for (;;) {
      try {
        await this.start(want);
        return true;
      } catch (e) {
        if (Date.now() > deadline) break;
        await sleep(200);
      }
    }
    await this.start(0);
    return false;
  }

  url(p = '') {
    return `${this.base}${p}`;
  }

  stderrTail(chars = 20_000) {
    try {
      const s = fs.readFileSync(this.logFile, 'utf8');
      return s.length > chars ? `…${s.slice(-chars)}` : s;
    } catch {
      return '';
    }
  }

  /** An HTTP request; `token` (default the admin token) as Bearer unless null. */
  async request(method, p, body, { token = ADMIN, headers = {} } = {}) {
    const h = { ...headers };
    if (token) h.authorization = `Bearer ${token}`;
    if (body !== undefined) h['content-type'] = 'application/json';
    const r = await fetch(this.url(p), { method, headers: h, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await r.text();
    let json = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch {
      json = text;
    }
    return { status: r.status, body: json, headers: r.headers };
  }

  async ok(method, p, body, expect = [200, 201, 204]) {
    const r = await this.request(method, p, body);
    if (!expect.includes(r.status)) throw new Error(`${method} ${p} → ${r.status}: ${JSON.stringify(r.body)}`);
    return r.body;
  }

  /** Posts a Zammad CTI event. */
  async cti(event) {
    const r = await this.request('POST', `/api/v1/cti/${CTI}`, event, { token: null });
    if (r.status !== 200) throw new Error(`CTI ${event.event} ${event.callId} → ${r.status}: ${JSON.stringify(r.body)}`);
    return r.body;
  }

  /** Creates a record in the built-in CRM (admin API) and returns it (`{id, …}`). */
  async createRecord(entity, fields) {
    return this.ok('POST', `/api/v1/crm/${entity}`, fields, [201]);
  }

  async deleteRecord(entity, id) {
    return this.ok('DELETE', `/api/v1/crm/${entity}/${encodeURIComponent(id)}`, undefined, [204]);
  }

  async record(entity, id) {
    return this.ok('GET', `/api/v1/crm/${entity}/${encodeURIComponent(id)}`);
  }

  /** The activities written regarding a record (admin API). */
  async activities(entity, id) {
    const b = await this.ok('GET', `/api/v1/crm/${entity}/${encodeURIComponent(id)}/activities`);
    return b.activities;
  }

  async conversationByCall(callId) {
    const b = await this.ok('GET', `/api/v1/conversations?external_id=${encodeURIComponent(callId)}`);
    return b.conversations[0] || null;
  }

  async conversation(id) {
    return this.ok('GET', `/api/v1/conversations/${encodeURIComponent(id)}`);
  }

  // The three CTI events of a call.
  async newCall({ callId, from, user = ['alice'], queue = 'sales', to = DIALED }) {
    await this.cti({ event: 'newCall', from, to, direction: 'in', callId, user: Array.isArray(user) ? user : [user], queue });
    const c = await until(`conversation of call ${callId}`, () => this.conversationByCall(callId));
    return c.id;
  }

  async answer({ callId, from, user = 'alice', number = '201', to = DIALED }) {
    return this.cti({ event: 'answer', from, to, direction: 'in', callId, user, answeringNumber: number });
  }

  async hangup({ callId, from, cause = 'normalClearing', to = DIALED }) {
    return this.cti({ event: 'hangup', from, to, direction: 'in', callId, cause });
  }

  /** Raw WebSocket upgrade of an agent stream; resolves to the HTTP status (101 when accepted). */
  upgradeStatus(agent, { cookie } = {}) {
    const u = new URL(this.url(`/api/v1/agents/${agent}/stream`));
    return new Promise((resolve, reject) => {
      const req = http.request({
        host: u.hostname, port: u.port, path: u.pathname, method: 'GET',
        headers: {
          connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-version': '13',
          'sec-websocket-key': crypto.randomBytes(16).toString('base64'), origin: this.base,
          ...(cookie ? { cookie } : {}),
        },
      });
      req.on('upgrade', (res, socket) => {
        socket.destroy();
        resolve(res.statusCode);
      });
      req.on('response', (res) => {
        res.resume();
        resolve(res.statusCode);
      });
      req.on('error', reject);
      req.end();
    });
  }
}

// ---------------------------------------------------------------------------------------------
// A small static server (for fake-cif.js).

export async function staticServer(files /* {'/path': {type, body}} */) {
  const srv = http.createServer((req, res) => {
    const f = files[new URL(req.url, 'http://x').pathname];
    if (!f) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-type': f.type, 'access-control-allow-origin': '*', 'cache-control': 'no-store' });
    res.end(f.body);
  });
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address();
  return { base: `http://127.0.0.1:${port}`, close: () => new Promise((r) => srv.close(r)) };
}

// ---------------------------------------------------------------------------------------------
// One test's world: servers, a browser, pages.

export class Env {
  constructor(name) {
    this.name = name;
    this.servers = [];
    this.closers = [];
    this.browser = null;
    this.pages = [];
    this.pageErrors = [];
  }

  /** Starts a server (see {@link configToml} for the options). */
  async server(options = {}) {
    const s = new Server(this, options);
    this.servers.push(s);
    await s.start(0);
    return s;
  }

  onClose(fn) {
    this.closers.push(fn);
  }

  async launch() {
    if (!this.browser) {
      this.browser = await playwright.chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, headless: true });
    }
    return this.browser;
  }

  /** A new page in a new browser context (its own cookies and storage). */
  async page({ width = 1100, height = 700, label } = {}) {
    const browser = await this.launch();
    const context = await browser.newContext({ viewport: { width, height } });
    const page = await context.newPage();
    const entry = { page, label: label || `page${this.pages.length + 1}`, console: [] };
    this.pages.push(entry);
    page.on('console', (m) => {
      const line = `[${m.type()}] ${m.text()}`;
      entry.console.push(line);
      if (/Content Security Policy/i.test(m.text())) this.pageErrors.push(`${entry.label}: CSP violation: ${m.text()}`);
    });
    page.on('response', (r) => {
      if (r.status() >= 400) entry.console.push(`[http ${r.status()}] ${r.request().method()} ${r.url()}`);
    });
    page.on('pageerror', (e) => {
      entry.console.push(`[pageerror] ${e.stack || e.message}`);
      this.pageErrors.push(`${entry.label}: uncaught ${e.message}`);
    });
    page.setDefaultTimeout(5000);
    return page;
  }

  assertNoPageErrors() {
    if (this.pageErrors.length) throw new Error(`the panel had errors:\n  ${this.pageErrors.join('\n  ')}`);
  }

  async report(error) {
    const out = [`\n----- failure in "${this.name}": ${error?.message}`];
    for (const s of this.servers) out.push(`----- server stderr (${s.logFile}):\n${s.stderrTail()}`);
    const dir = process.env.CXBRIDGE_BROWSER_ARTIFACTS || fs.mkdtempSync(path.join(os.tmpdir(), 'cxbridge-browser-fail-'));
    fs.mkdirSync(dir, { recursive: true });
    for (const p of this.pages) {
      out.push(`----- console of ${p.label}:\n${p.console.join('\n')}`);
      const file = path.join(dir, `${this.name.replace(/[^a-z0-9]+/gi, '-').slice(0, 60)}-${p.label}.png`);
      try {
        await p.page.screenshot({ path: file, fullPage: true, timeout: 3000 });
        out.push(`----- screenshot of ${p.label}: ${file}`);
      } catch {
        // the page may be gone
      }
    }
    process.stderr.write(`${out.join('\n')}\n`);
  }

  async close(failed) {
    if (this.browser) await this.browser.close().catch(() => {});
    for (const fn of this.closers.reverse()) await Promise.resolve(fn()).catch(() => {});
    for (const s of this.servers) {
      await s.stop().catch(() => {});
      if (!failed && s.ownsDataDir) fs.rmSync(s.dataDir, { recursive: true, force: true });
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The panel.

export const byTestId = (scope, id) => scope.locator(`[data-testid="${id}"]`);
export const card = (page, conversationId) => page.locator(`[data-testid="conversation"][data-conversation-id="${conversationId}"]`);
export const tab = (page, conversationId) => page.locator(`[data-testid="conversation-tab"][data-conversation-id="${conversationId}"]`);
export const tid = (scope, id) => scope.getByTestId(id);

/** Opens the panel and waits for the sign-in form. */
export async function openPanel(page, server) {
  await page.goto(server.url('/agent'));
  await tid(page, 'signin').waitFor({ state: 'visible' });
}

/** Fills the sign-in form and submits it (no waiting). */
export async function submitSignIn(page, agent, password) {
  await page.locator('#signin-agent').fill(agent);
  await page.locator('#signin-password').fill(password);
  await tid(page, 'signin').locator('button[type="submit"], input[type="submit"], button:not([type])').first().click();
}

/** Opens the panel, signs in through the form and waits until the stream is online. */
export async function signIn(page, server, agent = ALICE.id, password = ALICE.password) {
  await openPanel(page, server);
  await submitSignIn(page, agent, password);
  await tid(page, 'whoami').waitFor({ state: 'visible', timeout: 10_000 });
  await waitOnline(page);
}

export async function waitOnline(page, timeout = 10_000) {
  await waitAttr(tid(page, 'connection'), 'data-state', 'online', { timeout, what: 'the panel to be online' });
}

/** Waits for the conversation's card and selects its tab. */
export async function openCard(page, conversationId, { timeout = 5000 } = {}) {
  await tab(page, conversationId).waitFor({ state: 'visible', timeout });
  if ((await tab(page, conversationId).getAttribute('aria-selected')) !== 'true') await tab(page, conversationId).click();
  const c = card(page, conversationId);
  await c.waitFor({ state: 'visible', timeout });
  return c;
}

/** The pin button of the record `id` shown in a card (on the record, or beside it). */
export function pinButton(scope, id, which = 'pin') {
  return scope.locator([
    `[data-testid="${which}"][data-record-id="${id}"]`,
    `[data-record-id="${id}"] [data-testid="${which}"]`,
    `:has(> [data-record-id="${id}"]) > [data-testid="${which}"]`,
  ].join(', ')).first();
}

/** Types notes, picks a disposition by its label and submits the wrap-up. */
export async function wrapUp(c, { notes, disposition }) {
  if (notes !== undefined) await tid(c, 'notes').fill(notes);
  if (disposition !== undefined) await tid(c, 'disposition').selectOption({ label: disposition });
  await tid(c, 'wrapup-submit').click();
}

/** Wraps a conversation up through the API, as the agent's panel in another tab would. */
export async function wrapUpByApi(server, conversationId, code = 'sale') {
  return server.ok('POST', `/api/v1/conversations/${encodeURIComponent(conversationId)}/wrapup`, {
    request_id: crypto.randomUUID(), notes: '', disposition: { code, category: null },
  });
}

export async function waitMemorialized(c, status = 'written', timeout = 10_000) {
  return waitAttr(tid(c, 'memorialization'), 'data-status', status, { timeout, what: `memorialization ${status}` });
}

/** Waits until an activity about (entity, id) exists; returns the activities. */
export async function waitActivities(server, entity, id, { timeout = 10_000, count = 1 } = {}) {
  return until(`an activity regarding ${entity} ${id}`, async () => {
    const a = await server.activities(entity, id);
    return a.length >= count ? a : null;
  }, { timeout });
}

let callSeq = 0;
/** A unique CTI call id. */
export function callId(prefix = 'call') {
  callSeq += 1;
  return `${prefix}-${process.pid}-${callSeq}-${crypto.randomBytes(3).toString('hex')}`;
}
