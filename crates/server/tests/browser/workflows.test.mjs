// 9. Workflows run from the panel show their result.
// 10. A memorialization the CRM refuses shows as failed, and a supervisor retries it.

import assert from 'node:assert/strict';

import {
  BOB, callId, openCard, panelTest, signIn, tab, tid, waitActivities, waitAttr, waitMemorialized, waitOnline,
  waitText, wrapUp,
} from './harness.mjs';

panelTest("workflow button: the timeline of the selected record is shown in the card", async (env) => {
  const s = await env.server();
  const ada = await s.createRecord('contact', { name: 'Ada Lovelace', phone: '+14155550142' });
  await s.ok('POST', '/api/v1/activities', {
    key: 'earlier-ada-1', kind: 'task', regarding: [{ entity: 'contact', id: ada.id }],
    fields: { subject: 'Asked about the difference engine invoice' },
  });
  const page = await env.page();
  await signIn(page, s);

  const conv = await s.newCall({ callId: callId('wf'), from: '+14155550142' });
  const c = await openCard(page, conv);
  const workflows = tid(c, 'workflows');
  const button = workflows.locator('[data-testid="workflow"][data-workflow="contact_history"]');
  await button.waitFor({ state: 'visible' });
  assert.ok((await workflows.locator('[data-testid="workflow"]').count()) >= 2, 'one button per configured workflow');
  await button.click();
  await waitText(tid(c, 'workflow-result'), /Asked about the difference engine invoice/, { what: "the record's timeline" });
});

panelTest('failed memorialization: the card shows the CRM\'s reason, only a supervisor gets the retry, and the retry writes it', async (env) => {
  // The built-in CRM refuses an activity about an entity it does not know. Here the
  // administrator removes the `lead` entity from the config while a call with a lead is
  // waiting for its wrap-up, and puts it back later: a real refusal, then a real retry.
  const all = ['contact', 'account', 'lead'];
  const s = await env.server({ entities: all });
  const lead = await s.createRecord('lead', { name: 'Lin Prospect', phone: '+14155550180', company: 'Prospects Inc' });
  const page = await env.page({ label: 'alice' });
  await signIn(page, s);

  const call = { callId: callId('fail'), from: '+14155550180' };
  const conv = await s.newCall(call);
  let c = await openCard(page, conv);
  await waitAttr(tid(c, 'pop-record'), 'data-record-id', lead.id);
  await s.answer(call);
  await s.hangup(call);
  await waitAttr(c, 'data-state', 'ended');

  s.reconfigure({ entities: ['contact', 'account'] });
  if (!(await s.restart())) await page.goto(s.url('/agent'));
  await waitOnline(page, 15_000);
  c = await openCard(page, conv);
  await wrapUp(c, { notes: 'Wants a quote for 40 seats.', disposition: 'Sale' });
  await waitMemorialized(c, 'failed', 15_000);
  await waitText(tid(c, 'memorialization'), /fail.*lead/is, { what: "the CRM's reason (unknown entity lead)" });
  const retry = tid(c, 'retry');
  await retry.waitFor({ state: 'visible' });
  const failed = await s.conversation(conv);
  assert.equal(failed.memorialization?.status, 'failed');
  const outboxId = failed.memorialization.outbox_id;
  assert.ok(outboxId, 'the failed memorialization names its outbox item');

  // Bob is not a supervisor: no retry for him (the API refuses it).
  const bob = await env.page({ label: 'bob' });
  await signIn(bob, s, BOB.id, BOB.token);
  const bobStatus = await bob.evaluate(async (id) => {
    const session = await (await fetch('/api/v1/session')).json();
    const r = await fetch(`/api/v1/outbox/${id}/replay`, { method: 'POST', headers: { 'X-CSRF-Token': session.csrf_token } });
    return r.status;
  }, outboxId);
  assert.equal(bobStatus, 403, 'a replay by a non-supervisor is refused');

  // The administrator fixes the config; the supervisor retries from the card.
  s.reconfigure({ entities: all });
  if (!(await s.restart())) {
    await page.goto(s.url('/agent'));
  }
  await waitOnline(page, 15_000);
  await tab(page, conv).waitFor({ state: 'visible', timeout: 10_000 });
  c = await openCard(page, conv);
  assert.equal(await tid(c, 'memorialization').getAttribute('data-status'), 'failed', 'still failed until retried');
  await tid(c, 'retry').click();
  await waitMemorialized(c, 'written', 15_000);
  const [activity] = await waitActivities(s, 'lead', lead.id);
  assert.deepEqual(activity.regarding[0], { entity: 'lead', id: lead.id });
  assert.equal(activity.fields.notes, 'Wants a quote for 40 seats.');
  assert.equal(await tid(c, 'retry').isVisible(), false, 'no retry button once written');
}, { timeout: 90_000 });
