// The card the agent works on changes only when the agent changes it (#14 item 1), and
// finished conversations leave the tabs (#14 item 3).

import assert from 'node:assert/strict';

import {
  callId, card, openCard, panelTest, signIn, tab, tid, until, waitActivities, waitAttr, waitMemorialized, waitText,
  wrapUpByApi,
} from './harness.mjs';

const visibleCardId = (page) => page.evaluate(() => [...document.querySelectorAll('[data-testid="conversation"]')]
  .find((c) => !c.hidden)?.getAttribute('data-conversation-id') || null);

panelTest('a call that rings during wrap-up, with a click in progress, is announced and never takes the card', async (env) => {
  const s = await env.server();
  const margaret = await s.createRecord('contact', { name: 'Margaret Hamilton', phone: '+14155550161' });
  const page = await env.page({ width: 400, height: 800 });
  await signIn(page, s);

  const first = { callId: callId('acw'), from: '+14155550161' };
  const conv = await s.newCall(first);
  const c = await openCard(page, conv);
  await s.answer(first);
  await s.hangup(first);
  await waitAttr(c, 'data-state', 'ended', { what: 'after-call work on the first call' });
  // The agent chooses the code with the mouse; nothing is typed and no field keeps focus.
  await tid(c, 'disposition').selectOption({ label: 'Callback requested' });
  await page.evaluate(() => document.activeElement?.blur());

  // An anonymous call rings meanwhile.
  const second = await s.newCall({ callId: callId('between'), from: 'anonymous' });
  await tab(page, second).waitFor({ state: 'visible' });
  await tid(tab(page, second), 'tab-new').waitFor({ state: 'visible' });
  assert.equal(await visibleCardId(page), conv, 'the card stays on the call in wrap-up');
  assert.equal(await tab(page, conv).getAttribute('aria-selected'), 'true');
  const bar = tid(page, 'offer-bar');
  await waitText(bar, /New call/, { what: 'the offer bar' });
  assert.match(await page.title(), /^\(1\) New call/, 'the window title counts the new call');
  await waitText(tid(page, 'announcer'), /Alt\+N/, { what: 'the screen-reader announcement' });
  assert.match(await tid(c, 'wrapup-for').innerText(), /Margaret Hamilton/, 'the wrap-up says whose it is');

  // The click that submits lands on the call shown.
  await tid(c, 'wrapup-submit').click();
  await waitMemorialized(c);
  const [activity] = await waitActivities(s, 'contact', margaret.id);
  assert.equal(activity.fields.disposition, 'callback');
  assert.equal((await s.conversation(second)).wrapped_up, false, 'nothing was saved on the call that rang in between');
  assert.equal((await s.conversation(conv)).disposition?.code, 'callback');

  // One key takes the agent to the new call; the badge and the bar go.
  await page.keyboard.press('Alt+N');
  await until('the new call is shown', async () => (await visibleCardId(page)) === second);
  assert.equal(await tid(tab(page, second), 'tab-new').count(), 0, 'seen: no badge');
  assert.equal(await bar.isVisible(), false, 'no offer bar once seen');
  assert.match(await page.title(), /^\(1\) Ringing/);
});

panelTest('History on the first card while a second call rings runs on the first conversation', async (env) => {
  const s = await env.server();
  const ada = await s.createRecord('contact', { name: 'Ada Lovelace', phone: '+14155550142' });
  await s.ok('POST', '/api/v1/activities', {
    key: 'ada-history-1', kind: 'task', regarding: [{ entity: 'contact', id: ada.id }],
    fields: { subject: 'Asked about the analytical engine' },
  });
  const page = await env.page();
  await signIn(page, s);
  const workflowBodies = [];
  page.on('request', (r) => {
    if (r.method() === 'POST' && r.url().includes('/api/v1/workflows/')) workflowBodies.push(r.postDataJSON());
  });

  const call = { callId: callId('ada'), from: '+14155550142' };
  const conv = await s.newCall(call);
  const c = await openCard(page, conv);
  await waitAttr(tid(c, 'pop-record'), 'data-record-id', ada.id);
  await s.answer(call);
  await waitAttr(c, 'data-state', 'connected');

  const other = await s.newCall({ callId: callId('ringing'), from: '+14155550999' });
  await tab(page, other).waitFor({ state: 'visible' });
  const history = tid(c, 'workflows').locator('[data-testid="workflow"][data-workflow="contact_history"]');
  await history.click();
  await waitText(tid(c, 'workflow-result'), /Asked about the analytical engine/, { what: "Ada's timeline on Ada's card" });
  assert.equal(await visibleCardId(page), conv, 'the live call keeps the card');
  assert.deepEqual(workflowBodies.map((b) => b.conversation_id), [conv], 'the request names the conversation shown');
  assert.match(await tid(c, 'workflows-for').innerText(), /Ada Lovelace/);
  assert.equal(await tid(card(page, other), 'workflow-result').innerText(), '', 'nothing ran on the ringing call');

  // The offer bar takes the agent there with one click.
  await tid(page, 'offer-switch').click();
  await until('the ringing call is shown', async () => (await visibleCardId(page)) === other);
});

panelTest('30 calls in a row at 400 px: completed ones go to Recent, the live call is on top, newest ringing first, Clear completed', async (env) => {
  const s = await env.server({ panel: { recent_after_secs: 1 } });
  const page = await env.page({ width: 400, height: 800 });
  await signIn(page, s);

  const done = [];
  for (let i = 0; i < 30; i += 1) {
    const call = { callId: callId(`row-${i}`), from: `+1415555${String(1000 + i).padStart(4, '0')}` };
    const id = await s.newCall(call);
    await s.answer(call);
    await s.hangup(call);
    await wrapUpByApi(s, id);
    done.push(id);
  }
  await until('every call is complete on the hub', async () => (await s.conversation(done.at(-1))).state === 'completed', { timeout: 15_000 });
  await until('completed calls leave the tabs', async () => (await page.getByTestId('conversation-tab').count()) === 0, { timeout: 15_000 });
  await waitText(tid(page, 'recent-count'), /^10$/, { what: 'Recent keeps the last ten', timeout: 10_000 });

  // A live call, then two ringing ones.
  const live = { callId: callId('live'), from: '+14155552001' };
  const liveId = await s.newCall(live);
  await s.answer(live);
  await waitAttr(tab(page, liveId), 'data-state', 'connected');
  const older = await s.newCall({ callId: callId('ring-1'), from: '+14155552002' });
  await tab(page, older).waitFor({ state: 'visible' });
  const newer = await s.newCall({ callId: callId('ring-2'), from: '+14155552003' });
  await tab(page, newer).waitFor({ state: 'visible' });
  const order = await page.getByTestId('conversation-tab').evaluateAll((els) => els.map((e) => e.getAttribute('data-conversation-id')));
  assert.deepEqual(order, [liveId, newer, older], 'the live call first, then ringing calls newest first');
  assert.equal(await visibleCardId(page), liveId, 'the live call keeps the card');
  const top = await tab(page, liveId).evaluate((el) => el.getBoundingClientRect().top);
  assert.ok(top < 160, `the live call's tab is at the top of the view (${top} px down)`);
  const cardTop = await card(page, liveId).evaluate((el) => el.getBoundingClientRect().top);
  assert.ok(cardTop < 360, `the live call's card starts near the top (${cardTop} px down)`);

  // A completed call comes back from Recent with one click, and Clear completed empties it.
  const recentOne = page.getByTestId('recent-item').first();
  await tid(page, 'recent').locator('summary').click();
  const back = await recentOne.getAttribute('data-conversation-id');
  await recentOne.click();
  await until('the completed call is shown again', async () => (await visibleCardId(page)) === back);
  await tid(page, 'clear-completed').click();
  await until('completed calls cleared', async () => (await page.locator(`[data-conversation-id="${back}"]`).count()) === 0);
  assert.equal(await tid(page, 'recent').isVisible(), false, 'nothing left in Recent');
  assert.equal(await page.getByTestId('conversation-tab').count(), 3, 'the live and ringing calls stay');
  await page.reload();
  await tab(page, liveId).waitFor({ state: 'visible' });
  assert.equal(await page.locator(`[data-conversation-id="${back}"]`).count(), 0, 'cleared calls stay cleared after a reload');
}, { timeout: 120_000 });
