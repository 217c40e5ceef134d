// Screenshots of the agent panel for the docs (run by scripts/screenshot-panel):
// OUT_DIR/panel.png (1100×700) and OUT_DIR/panel-narrow.png (350×700).
// Starts the real binary with demo-like data, signs alice in, pops a single-match call, a
// second call, and a third that rings while she works (announced, not switched to).

import path from 'node:path';

import {
  ALICE, Env, MISSING, REPO_ROOT, callId, openCard, signIn, tab, tid, until, waitAttr,
} from './harness.mjs';

const outDir = path.resolve(process.argv[2] || path.join(REPO_ROOT, 'docs'));
if (MISSING) {
  console.error(`screenshot-panel: ${MISSING}`);
  process.exit(1);
}

const env = new Env('screenshot');
let failed = false;
try {
  const s = await env.server();
  const engines = await s.createRecord('account', { name: 'Analytical Engines Ltd', phone: '+14155550100', owner: 'Alice Example' });
  const ada = await s.createRecord('contact', {
    name: 'Ada Lovelace', phone: '+1 415 555 0142', email: 'ada@analytical.example', company: 'Analytical Engines Ltd', account_id: engines.id,
  });
  await s.createRecord('contact', { name: 'Charles Babbage', phone: '+1 415 555 0143', company: 'Analytical Engines Ltd', account_id: engines.id });
  await s.createRecord('lead', { name: 'Mary Somerville', phone: '+1 415 555 0177', company: 'Somerville Optics' });

  // Two earlier calls of Ada's, wrapped up: the card's related interactions.
  const earlier = [
    { notes: 'Asked for the Q3 invoice to be re-sent.', code: 'callback', category: 'Service' },
    { notes: 'Upgraded to the premium plan.', code: 'upsell', category: 'Sales' },
  ];
  for (const e of earlier) {
    const call = { callId: callId('earlier'), from: '+14155550142' };
    const id = await s.newCall(call);
    await s.answer(call);
    await s.hangup(call);
    await s.ok('POST', `/api/v1/conversations/${id}/wrapup`, { agent: 'alice', notes: e.notes, disposition: { code: e.code, category: e.category } });
    await until('the earlier call to be written', async () => (await s.conversation(id)).memorialization?.status === 'written');
  }

  const page = await env.page({ width: 1100, height: 700 });
  await signIn(page, s, ALICE.id, ALICE.password);

  const second = await s.newCall({ callId: callId('second'), from: '+14155550188', queue: 'support' });
  await tab(page, second).waitFor({ state: 'visible' });
  const call = { callId: callId('ada'), from: '+14155550142', queue: 'sales' };
  const conv = await s.newCall(call);
  const c = await openCard(page, conv);
  await s.answer(call);
  await waitAttr(c, 'data-state', 'connected');

  await tid(c, 'notes').fill('Calling about the premium plan renewal; wants a quote for 40 seats.');
  await tid(c, 'disposition').selectOption({ label: 'Upsell' }).catch(() => {});
  // A call that rings while Alice works on Ada's: announced (badge, offer bar), not switched to.
  const third = await s.newCall({ callId: callId('third'), from: '+14155550177', queue: 'sales' });
  await tid(tab(page, third), 'tab-new').waitFor({ state: 'visible' }).catch(() => {
    console.error('screenshot-panel: the new call was not announced on its tab (taking the screenshot anyway)');
  });
  await page.waitForTimeout(500);
  await page.evaluate(() => document.activeElement?.blur());
  await page.screenshot({ path: path.join(outDir, 'panel.png') });

  await page.setViewportSize({ width: 350, height: 700 });
  await page.waitForTimeout(300);
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: path.join(outDir, 'panel-narrow.png') });
  console.log(`screenshot-panel: wrote ${path.join(outDir, 'panel.png')} and ${path.join(outDir, 'panel-narrow.png')} (record ${ada.id})`);
} catch (e) {
  failed = true;
  await env.report(e);
  console.error(e);
} finally {
  await env.close(failed);
}
process.exit(failed ? 1 : 0);
