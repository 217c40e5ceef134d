// 8. Inside Dynamics 365: the panel drives the Channel Integration Framework. The CIF library
// is fake-cif.js (a recording implementation of Microsoft.CIFramework), served from its own
// origin as the real one is.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';

import {
  HERE, MISSING, callId, openCard, panelTest, signIn, staticServer, tid, until, waitText,
} from './harness.mjs';

const FAKE_CIF = path.join(HERE, 'fake-cif.js');
const CRM_URL = 'https://org.crm.dynamics.com';

/** Every recorded CIF call, functions replaced by "[function]". */
function cifCalls(page) {
  return page.evaluate(() => JSON.parse(JSON.stringify(window.__cifCalls || [], (k, v) => (typeof v === 'function' ? '[function]' : v))));
}

/** Waits for a call of `method` after the first `from` recorded calls that satisfies `ok`. */
async function waitCif(page, method, { from = 0, ok = () => true, what } = {}) {
  let seen = [];
  return until(what || `a CIF ${method} call`, async () => {
    seen = (await cifCalls(page)).slice(from);
    return seen.find((c) => c.method === method && ok(c.args));
  }, { timeout: 5000 }).catch((e) => {
    throw new Error(`${e.message}; calls seen: ${JSON.stringify(seen)}`);
  });
}

async function cifServer(env, version) {
  if (!fs.existsSync(FAKE_CIF)) throw new Error(`${FAKE_CIF} is missing (the CIF helper writes it)`);
  const st = await staticServer({ '/fake-cif.js': { type: 'text/javascript; charset=utf-8', body: fs.readFileSync(FAKE_CIF) } });
  env.onClose(st.close);
  const url = version === 2 ? `${st.base}/fake-cif.js?v=2` : `${st.base}/fake-cif.js`;
  return env.server({ dynamics: { cif_library_url: url, crm_url: CRM_URL, cif_version: version } });
}

const str = (v) => (typeof v === 'string' ? v : JSON.stringify(v));
const json = (v) => (typeof v === 'string' ? JSON.parse(v) : v);

panelTest('CIF v1: open, list, create and search pops call searchAndOpenRecords / createRecord / renderSearchPage; click-to-act logs the dial', async (env) => {
  const s = await cifServer(env, 1);
  const ada = await s.createRecord('contact', { name: 'Ada Lovelace', phone: '+14155550142' });
  const g1 = await s.createRecord('contact', { name: 'Grace Hopper', phone: '+14155550150' });
  const g2 = await s.createRecord('contact', { name: 'Grace Brewster', phone: '+14155550150' });
  const page = await env.page();
  await signIn(page, s);

  // The library was loaded from its URL, and click-to-act registered.
  await waitCif(page, 'setClickToAct', { ok: (a) => a[0] === true });
  await waitCif(page, 'addHandler', { ok: (a) => a[0] === 'onclicktoact' && a[1] === '[function]' });
  const scriptSrc = await page.evaluate(() => [...document.scripts].map((x) => x.src).find((src) => src.includes('fake-cif.js')));
  assert.ok(scriptSrc, 'the CIF library is loaded from cif_library_url');

  // single → searchAndOpenRecords with the record's id
  let n = (await cifCalls(page)).length;
  const single = await s.newCall({ callId: callId('cif-single'), from: '+14155550142' });
  await openCard(page, single);
  const open = await waitCif(page, 'searchAndOpenRecords', { from: n, ok: (a) => str(a[1]).includes(ada.id), what: `searchAndOpenRecords naming ${ada.id}` });
  assert.equal(open.args[0], 'contact');
  assert.equal(open.args[2], false, 'searchOnly = false: the record opens');

  // multiple → searchAndOpenRecords (Dynamics shows the list)
  n = (await cifCalls(page)).length;
  const multi = await s.newCall({ callId: callId('cif-multi'), from: '+14155550150' });
  await openCard(page, multi);
  const list = await waitCif(page, 'searchAndOpenRecords', { from: n, what: 'searchAndOpenRecords for the list' });
  assert.equal(list.args[0], 'contact');
  const q = str(list.args[1]);
  assert.ok((q.includes(g1.id) && q.includes(g2.id)) || q.includes('4155550150'), `the query names both candidates or the number: ${q}`);

  // none → createRecord with the prefilled fields
  n = (await cifCalls(page)).length;
  const none = await s.newCall({ callId: callId('cif-none'), from: '+14155550199' });
  await openCard(page, none);
  const create = await waitCif(page, 'createRecord', { from: n });
  assert.equal(create.args[0], 'contact');
  assert.equal(json(create.args[1]).phone, '+14155550199', `createRecord prefill: ${str(create.args[1])}`);

  // the `lookup` queue's rule says search → renderSearchPage
  n = (await cifCalls(page)).length;
  const search = await s.newCall({ callId: callId('cif-search'), from: '+14155550198', queue: 'lookup' });
  await openCard(page, search);
  const render = await waitCif(page, 'renderSearchPage', { from: n });
  assert.equal(render.args[0], 'contact');
  assert.match(str(render.args[1]), /4155550198/, 'the search text is the caller');

  // a disabled pop makes no CIF call
  n = (await cifCalls(page)).length;
  await s.newCall({ callId: callId('cif-disabled'), from: '+14155550142', queue: 'outbound-campaign' });
  const after = await s.newCall({ callId: callId('cif-after'), from: '+14155550142' });
  await openCard(page, after);
  await waitCif(page, 'searchAndOpenRecords', { from: n, ok: (a) => str(a[1]).includes(ada.id) });
  const opened = (await cifCalls(page)).slice(n).filter((c) => c.method === 'searchAndOpenRecords');
  assert.equal(opened.length, 1, `only the normal call opened a record: ${JSON.stringify(opened)}`);

  // click-to-act from Dynamics → an entry in the dial log
  await page.evaluate(() => window.__cifClickToAct({
    value: '+14155550123', name: 'telephone1', format: 'Phone', entityLogicalName: 'contact', entityId: 'aaaaaaaa-0000-0000-0000-000000000001',
  }));
  await waitText(tid(page, 'dial-log'), /\+?1?\s*\(?415\)?[\s-]*555[\s-]*0123/, { what: 'the dialled number in dial-log' });
});

panelTest('CIF v2: a toast (notifyEvent) and a session (createSession) per conversation', async (env) => {
  const s = await cifServer(env, 2);
  const ada = await s.createRecord('contact', { name: 'Ada Lovelace', phone: '+14155550142' });
  const page = await env.page();
  await signIn(page, s);
  await waitCif(page, 'setClickToAct', { ok: (a) => a[0] === true });

  const conv1 = await s.newCall({ callId: callId('cif2-1'), from: '+14155550142' });
  await openCard(page, conv1);
  await waitCif(page, 'searchAndOpenRecords', { ok: (a) => str(a[1]).includes(ada.id) });
  const conv2 = await s.newCall({ callId: callId('cif2-2'), from: '+14155550199' });
  await openCard(page, conv2);
  await waitCif(page, 'createRecord');

  const calls = await cifCalls(page);
  const methods = calls.map((c) => c.method);
  const toasts = calls.filter((c) => c.method === 'notifyEvent');
  const sessions = calls.filter((c) => c.method === 'createSession');
  assert.equal(toasts.length, 2, `one notifyEvent per pop: ${JSON.stringify(methods)}`);
  assert.equal(sessions.length, 2, `one createSession per conversation: ${JSON.stringify(methods)}`);
  assert.match(str(toasts[0].args[0]), /4155550142/, `the first toast names the caller: ${str(toasts[0].args[0])}`);
  assert.match(str(toasts[1].args[0]), /4155550199/, 'the second toast names its caller');
  for (const t of toasts) assert.ok(json(t.args[0]).templateName, `notifyEvent input has a templateName: ${str(t.args[0])}`);
  for (const c of sessions) assert.ok(json(c.args[0]).templateName, `createSession input has a templateName: ${str(c.args[0])}`);
  assert.ok(methods.indexOf('notifyEvent') < methods.indexOf('searchAndOpenRecords'), `the toast comes before the record opens: ${JSON.stringify(methods)}`);
});

if (!MISSING && !fs.existsSync(FAKE_CIF)) process.stderr.write(`# note: ${FAKE_CIF} does not exist yet; the CIF tests will fail\n`);
