// 7. The server restarts mid-call: the panel goes offline, keeps everything, comes back, and
// loses neither a pop offered meanwhile nor a wrap-up submitted while offline.

import assert from 'node:assert/strict';

import {
  callId, card, openCard, panelTest, signIn, tab, tid, until, waitActivities, waitAttr, waitMemorialized, waitOnline,
  waitText, wrapUp,
} from './harness.mjs';

async function waitOffline(page) {
  await waitAttr(tid(page, 'connection'), 'data-state', (v) => v === 'offline' || v === 'connecting', {
    timeout: 10_000, what: 'the panel to notice the server is gone',
  });
  await waitText(tid(page, 'connection'), /offline|connecting/i);
}

/** Restarts the server; when the port could not be kept, the page is pointed at the new URL. */
async function restart(server, page) {
  const samePort = await server.restart();
  if (!samePort) {
    process.stderr.write(`# restart: port ${server.port} could not be bound again; reloading the panel at ${server.base}\n`);
    await page.goto(server.url('/agent'));
  }
  return samePort;
}

panelTest('server restart mid-call: offline, notes kept, online again with the conversation; pops and wrap-ups survive', async (env) => {
  const s = await env.server();
  const ada = await s.createRecord('contact', { name: 'Ada Lovelace', phone: '+14155550142' });
  const babbage = await s.createRecord('contact', { name: 'Charles Babbage', phone: '+14155550143' });
  const page = await env.page();
  await signIn(page, s);

  const call1 = { callId: callId('before'), from: '+14155550142' };
  const conv1 = await s.newCall(call1);
  let c1 = await openCard(page, conv1);
  await s.answer(call1);
  await waitAttr(c1, 'data-state', 'connected');
  await tid(c1, 'notes').fill('Typed before the restart.');

  await s.stop();
  await waitOffline(page);
  assert.equal(await card(page, conv1).count(), 1, 'the card stays while offline');
  // Notes typed while offline are kept.
  await tid(c1, 'notes').pressSequentially(' And while offline.', { delay: 5 });
  const notes = 'Typed before the restart. And while offline.';
  await page.waitForTimeout(1500); // let the panel back off a little: the next call arrives while it reconnects

  const samePort = await restart(s, page);
  // A call offered while the panel is still reconnecting.
  const call2 = { callId: callId('during'), from: '+14155550143' };
  const conv2 = await s.newCall(call2);
  const stateWhenOffered = await tid(page, 'connection').getAttribute('data-state');
  if (stateWhenOffered === 'online') process.stderr.write('# note: the panel had already reconnected when the second call was offered\n');

  await waitOnline(page, 15_000);
  c1 = card(page, conv1);
  await tab(page, conv1).waitFor({ state: 'visible' });
  await tab(page, conv2).waitFor({ state: 'visible', timeout: 10_000 });
  await openCard(page, conv1);
  if (samePort) assert.equal(await tid(c1, 'notes').inputValue(), notes, 'the notes survive the restart intact');
  assert.equal(await c1.getAttribute('data-state'), 'connected', 'the call is still connected');
  const c2 = await openCard(page, conv2);
  await waitText(tid(c2, 'record-title'), /Charles Babbage/);

  // Wrap-up works after the restart.
  await openCard(page, conv1);
  await s.hangup(call1);
  await waitAttr(c1, 'data-state', 'ended');
  await wrapUp(c1, { disposition: 'Sale' });
  await waitMemorialized(c1, 'written');
  const [a1] = await waitActivities(s, 'contact', ada.id);
  assert.equal(a1.fields.notes, samePort ? notes : a1.fields.notes);
  assert.equal(a1.fields.disposition, 'sale');

  // A wrap-up submitted while offline is queued and delivered on reconnect.
  await s.answer(call2);
  await s.hangup(call2);
  await openCard(page, conv2);
  await waitAttr(c2, 'data-state', 'ended');
  await s.stop();
  await waitOffline(page);
  await wrapUp(c2, { notes: 'Submitted while offline.', disposition: 'Complaint' });
  await tid(c2, 'wrapup-queued').waitFor({ state: 'visible' });
  const stopped = await s.conversationByCall(call2.callId).catch(() => null);
  assert.equal(stopped, null, 'the server is really down');

  await restart(s, page);
  await waitOnline(page, 15_000);
  await until('the queued wrap-up to reach the server', async () => (await s.conversation(conv2)).wrapped_up, { timeout: 10_000 });
  const stored = await s.conversation(conv2);
  assert.equal(stored.notes, 'Submitted while offline.');
  assert.equal(stored.disposition?.code, 'complaint');
  await openCard(page, conv2);
  await waitMemorialized(card(page, conv2), 'written');
  assert.equal(await tid(card(page, conv2), 'wrapup-queued').isVisible(), false, 'no longer shown as queued');
  const [a2] = await waitActivities(s, 'contact', babbage.id);
  assert.equal(a2.fields.notes, 'Submitted while offline.');
}, { timeout: 90_000 });
