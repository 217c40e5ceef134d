// 2–6. What a pop shows, and the way from a pop to the activity in the CRM.

import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';

import {
  DIALED, callId, card, openCard, panelTest, pinButton, signIn, tab, tid, until, waitActivities, waitAttr,
  waitMemorialized, waitOnline, waitText, wrapUp,
} from './harness.mjs';

async function texts(locator) {
  return (await locator.allInnerTexts()).map((t) => t.trim());
}

panelTest('single match: the pop is on screen within 1 s with caller, queue, channel and the display fields', async (env) => {
  const s = await env.server();
  const ada = await s.createRecord('contact', { name: 'Ada Lovelace', phone: '(415) 555-0142', company: 'Analytical Engines' });
  const page = await env.page();
  await signIn(page, s);

  const id = callId('single');
  const popped = page.locator('[data-testid="conversation"] [data-testid="pop-record"]').first();
  const t0 = performance.now();
  await s.cti({ event: 'newCall', from: '+14155550142', to: DIALED, direction: 'in', callId: id, user: ['alice'], queue: 'sales' });
  await popped.waitFor({ state: 'visible', timeout: 5000 });
  const elapsed = performance.now() - t0;
  assert.ok(elapsed < 1000, `the pop took ${elapsed.toFixed(0)} ms from the newCall POST to the card being visible`);

  const conv = await s.conversationByCall(id);
  const c = card(page, conv.id);
  assert.equal(await c.isVisible(), true, 'the new pop selected its card');
  assert.equal(await tab(page, conv.id).getAttribute('aria-selected'), 'true');
  assert.equal(await c.getAttribute('data-pop-action'), 'open');
  assert.equal(await c.getAttribute('data-state'), 'offered');
  assert.match(await tid(c, 'caller').innerText(), /\+14155550142/);
  assert.match(await tid(c, 'queue').innerText(), /sales/i);
  assert.match(await tid(c, 'channel').innerText(), /voice|phone|call/i);
  assert.match(await tid(c, 'direction').innerText(), /in/i);

  const record = tid(c, 'pop-record');
  assert.equal(await record.getAttribute('data-record-id'), ada.id);
  assert.equal(await record.getAttribute('data-entity'), 'contact');
  assert.match(await tid(record, 'record-title').innerText(), /Ada Lovelace/);
  const fields = tid(record, 'display-field');
  assert.equal(await fields.count(), 3, 'one display-field per configured display field');
  assert.deepEqual(await texts(tid(record, 'display-label')), ['Name', 'Phone', 'Company'], 'labels in configured order');
  assert.deepEqual(await texts(tid(record, 'display-value')), ['Ada Lovelace', '(415) 555-0142', 'Analytical Engines'], 'values of the record');

  // The call state follows the call.
  await s.answer({ callId: id, from: '+14155550142' });
  await waitAttr(c, 'data-state', 'connected', { what: 'the card to show the call connected' });
  await s.hangup({ callId: id, from: '+14155550142' });
  await waitAttr(c, 'data-state', 'ended', { what: 'the card to show the call ended' });
});

panelTest('multiple matches: list → select → answer → hang up → wrap-up; the activity is about the selected record and the pinned one', async (env) => {
  const s = await env.server();
  const hopper = await s.createRecord('contact', { name: 'Grace Hopper', phone: '+14155550150', company: 'US Navy' });
  const brewster = await s.createRecord('contact', { name: 'Grace Brewster', phone: '+1 415 555 0150', company: 'Vassar' });
  const page = await env.page();
  await signIn(page, s);

  const id = callId('multi');
  const from = '+14155550150';
  const conv = await s.newCall({ callId: id, from });
  const c = await openCard(page, conv);
  assert.equal(await c.getAttribute('data-pop-action'), 'list');
  const candidates = tid(c, 'candidate');
  await until('two candidates', async () => (await candidates.count()) === 2);
  const ids = await candidates.evaluateAll((els) => els.map((e) => e.getAttribute('data-record-id')));
  assert.deepEqual(ids.sort(), [hopper.id, brewster.id].sort());

  // Choose the second Grace (not whichever comes first).
  await c.locator(`[data-testid="candidate"][data-record-id="${brewster.id}"]`).click();
  await waitAttr(tid(c, 'selected-record'), 'data-record-id', brewster.id, { what: 'the chosen record to be selected' });
  await until('the server to know the selection', async () => (await s.conversation(conv)).selected?.id === brewster.id);

  // Pin the other one.
  await pinButton(c, hopper.id).click();
  await c.locator(`[data-testid="pinned-record"][data-record-id="${hopper.id}"]`).waitFor({ state: 'visible' });
  await until('the server to know the pin', async () => (await s.conversation(conv)).pinned.some((r) => r.id === hopper.id));

  await s.answer({ callId: id, from });
  await waitAttr(c, 'data-state', 'connected');
  await s.hangup({ callId: id, from });
  await waitAttr(c, 'data-state', 'ended');

  const notes = 'Wants the premium plan.\nCall back on Friday.';
  await wrapUp(c, { notes, disposition: 'Upsell' });
  await waitMemorialized(c, 'written');
  await waitText(tid(c, 'memorialization'), /saved/i);

  const [activity] = await waitActivities(s, 'contact', brewster.id);
  assert.deepEqual(activity.regarding[0], { entity: 'contact', id: brewster.id }, 'the selected record is the primary one');
  assert.equal(activity.fields.notes, notes);
  assert.equal(activity.fields.disposition, 'upsell');
  assert.equal(activity.fields.disposition_category, 'Sales');
  const pinned = await s.activities('contact', hopper.id);
  assert.ok(pinned.some((a) => a.id === activity.id), `the pinned record has the activity too: ${JSON.stringify(pinned)}`);

  const stored = await s.conversation(conv);
  assert.equal(stored.notes, notes);
  assert.equal(stored.disposition?.code, 'upsell');
});

panelTest('no match: prefilled create form → create → selected → wrap-up → activity about the new record', async (env) => {
  const s = await env.server();
  const page = await env.page();
  await signIn(page, s);

  const id = callId('none');
  const from = '+14155550199';
  const conv = await s.newCall({ callId: id, from });
  const c = await openCard(page, conv);
  assert.equal(await c.getAttribute('data-pop-action'), 'create');
  const form = tid(c, 'create-form');
  await form.waitFor({ state: 'visible' });
  assert.equal(await form.locator('[name="phone"]').inputValue(), '+14155550199', 'the phone is prefilled with the E.164 number');

  await form.locator('[name="name"]').fill('Katherine Johnson');
  if (await form.locator('[name="company"]').count()) await form.locator('[name="company"]').fill('NASA');
  await tid(c, 'create-submit').click();

  const newId = await waitAttr(tid(c, 'selected-record'), 'data-record-id', (v) => !!v, { what: 'the new record to be selected' });
  const record = await s.record('contact', newId);
  assert.equal(record.fields.name, 'Katherine Johnson');
  assert.equal(record.fields.phone, '+14155550199');
  assert.equal((await s.conversation(conv)).selected?.id, newId, 'the server selected the new record');

  await s.answer({ callId: id, from });
  await s.hangup({ callId: id, from });
  await waitAttr(c, 'data-state', 'ended');
  await wrapUp(c, { notes: 'First call, new customer.', disposition: 'Sale' });
  await waitMemorialized(c, 'written');

  const [activity] = await waitActivities(s, 'contact', newId);
  assert.deepEqual(activity.regarding[0], { entity: 'contact', id: newId });
  assert.equal(activity.fields.notes, 'First call, new customer.');
  assert.equal(activity.fields.disposition, 'sale');
});

panelTest('a disabled pop rule shows no tab and no card, while a normal call right after pops', async (env) => {
  const s = await env.server();
  await s.createRecord('contact', { name: 'Campaign Target', phone: '+14155550160' });
  await s.createRecord('contact', { name: 'Normal Caller', phone: '+14155550161' });
  const page = await env.page();
  await signIn(page, s);

  const disabled = await s.newCall({ callId: callId('campaign'), from: '+14155550160', queue: 'outbound-campaign' });
  const normal = await s.newCall({ callId: callId('normal'), from: '+14155550161', queue: 'sales' });
  const c = await openCard(page, normal);
  await waitText(tid(c, 'record-title'), /Normal Caller/);

  assert.equal(await page.locator(`[data-conversation-id="${disabled}"]`).count(), 0, 'the disabled conversation is not in the DOM');
  assert.equal(await page.locator('[data-testid="conversation-tab"]').count(), 1, 'one tab only');
  assert.equal(await page.locator('[data-testid="conversation"]').count(), 1, 'one card only');
  assert.equal(await page.getByText('Campaign Target').count(), 0);

  // Not after a reload (the snapshot lists it, with pop.action = disabled) either.
  await page.reload();
  await waitOnline(page);
  await tab(page, normal).waitFor({ state: 'visible' });
  assert.equal(await page.locator(`[data-conversation-id="${disabled}"]`).count(), 0, 'not after a reload either');
});

panelTest('two simultaneous calls: two tabs, separate notes, separate wrap-ups', async (env) => {
  const s = await env.server();
  const one = await s.createRecord('contact', { name: 'First Caller', phone: '+14155550171' });
  const two = await s.createRecord('contact', { name: 'Second Caller', phone: '+14155550172' });
  const page = await env.page();
  await signIn(page, s);

  const call1 = { callId: callId('one'), from: '+14155550171' };
  const call2 = { callId: callId('two'), from: '+14155550172' };
  const conv1 = await s.newCall(call1);
  const conv2 = await s.newCall(call2);
  await tab(page, conv1).waitFor({ state: 'visible' });
  await tab(page, conv2).waitFor({ state: 'visible' });
  assert.equal(await page.locator('[data-testid="conversation-tab"]').count(), 2);

  const c1 = await openCard(page, conv1);
  assert.equal(await card(page, conv2).isVisible(), false, 'only the selected card is visible');
  await tid(c1, 'notes').fill('Notes for the first caller');

  const c2 = await openCard(page, conv2);
  assert.equal(await c1.isVisible(), false);
  assert.equal(await tid(c2, 'notes').inputValue(), '', "the first card's notes are not in the second");
  await tid(c2, 'notes').fill('Notes for the second caller');

  await openCard(page, conv1);
  assert.equal(await tid(c1, 'notes').inputValue(), 'Notes for the first caller', 'each card keeps its own notes');

  for (const call of [call1, call2]) {
    await s.answer(call);
    await s.hangup(call);
  }
  await waitAttr(c1, 'data-state', 'ended');
  await wrapUp(c1, { disposition: 'Sale' });
  await waitMemorialized(c1, 'written');

  await openCard(page, conv2);
  assert.equal(await tid(c2, 'memorialization').getAttribute('data-status'), 'waiting', 'the second is not wrapped up by the first');
  assert.equal(await tid(c2, 'notes').inputValue(), 'Notes for the second caller');
  await waitAttr(c2, 'data-state', 'ended');
  await wrapUp(c2, { disposition: 'Complaint' });
  await waitMemorialized(c2, 'written');

  const [a1] = await waitActivities(s, 'contact', one.id);
  const [a2] = await waitActivities(s, 'contact', two.id);
  assert.equal(a1.fields.notes, 'Notes for the first caller');
  assert.equal(a1.fields.disposition, 'sale');
  assert.equal(a2.fields.notes, 'Notes for the second caller');
  assert.equal(a2.fields.disposition, 'complaint');
  assert.notEqual(a1.id, a2.id);
});
