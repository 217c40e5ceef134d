// 1. Sign-in is required, and an agent only ever sees its own conversations.

import assert from 'node:assert/strict';

import {
  ALICE, BOB, callId, card, openCard, openPanel, panelTest, signIn, submitSignIn, tab, tid, waitOnline, waitText,
} from './harness.mjs';

panelTest('sign-in is required: API and stream refuse without a session, a wrong password shows the error, the right one signs in', async (env) => {
  const s = await env.server();

  for (const p of ['/api/v1/session', '/api/v1/panel', '/api/v1/workflows']) {
    const r = await s.request('GET', p, undefined, { token: null });
    assert.equal(r.status, 401, `GET ${p} without a session: ${JSON.stringify(r.body)}`);
  }
  assert.equal(await s.upgradeStatus('alice'), 401, 'the agent stream without a session');

  const page = await env.page({ label: 'alice' });
  await openPanel(page, s);
  assert.equal(await tid(page, 'whoami').isVisible(), false, 'nobody is signed in yet');

  await submitSignIn(page, ALICE.id, 'not the password');
  await waitText(tid(page, 'signin-error'), /\S/, { what: 'the sign-in error' });
  assert.equal(await tid(page, 'whoami').isVisible(), false, 'a wrong password does not sign in');
  assert.equal(await tid(page, 'signin').isVisible(), true, 'the form stays');

  await submitSignIn(page, ALICE.id, ALICE.password);
  await waitText(tid(page, 'whoami'), /Alice Example|alice/, { timeout: 10_000, what: "alice's name" });
  await waitOnline(page);
  await waitText(tid(page, 'connection'), /online/i);
  assert.equal(await tid(page, 'signin').isVisible(), false, 'the form is gone once signed in');

  // The session is an HttpOnly cookie: the page's script never sees it.
  assert.equal(await page.evaluate(() => document.cookie.includes('cxbridge_session')), false, 'session cookie is HttpOnly');
  const cookies = await page.context().cookies();
  const session = cookies.find((c) => c.name === 'cxbridge_session');
  assert.ok(session, `the session cookie is set: ${JSON.stringify(cookies.map((c) => c.name))}`);
  assert.equal(session.httpOnly, true);
  const cookie = `cxbridge_session=${session.value}`;
  assert.equal(await s.upgradeStatus('alice', { cookie }), 101, "alice's session opens alice's stream");
  assert.equal(await s.upgradeStatus('bob', { cookie }), 403, "alice's session may not open bob's stream");

  // A reload keeps the session.
  await page.reload();
  await waitOnline(page);
  assert.equal(await tid(page, 'signin').isVisible(), false, 'still signed in after a reload');

  // Signing out ends the session: the form is back and the API refuses again.
  await tid(page, 'signout').click();
  await tid(page, 'signin').waitFor({ state: 'visible' });
  assert.equal(await page.evaluate(async () => (await fetch('/api/v1/session')).status), 401, 'signed out');
  assert.equal((await page.context().cookies()).some((c) => c.name === 'cxbridge_session' && c.value), false, 'the cookie is cleared');
});

panelTest("bob never sees alice's pop (two browsers), and alice never sees bob's", async (env) => {
  const s = await env.server();
  await s.createRecord('contact', { name: 'Ada Lovelace', phone: '+14155550142' });
  await s.createRecord('contact', { name: 'Charles Babbage', phone: '+14155550143' });

  const alice = await env.page({ label: 'alice' });
  const bob = await env.page({ label: 'bob' });
  await signIn(alice, s, ALICE.id, ALICE.password);
  await signIn(bob, s, BOB.id, BOB.token); // an agent's access token also signs in
  await waitText(tid(bob, 'whoami'), /Bob Builder|bob/);

  const forAlice = await s.newCall({ callId: callId('alice'), from: '+14155550142', user: ['alice'] });
  await openCard(alice, forAlice);
  // Posted after alice's: once bob's pop is on his screen, alice's would have been there too.
  const forBob = await s.newCall({ callId: callId('bob'), from: '+14155550143', user: ['bob'] });
  await openCard(bob, forBob);
  await openCard(alice, forAlice);

  assert.equal(await bob.locator('[data-testid="conversation-tab"]').count(), 1, 'bob has exactly his own tab');
  assert.equal(await bob.locator(`[data-conversation-id="${forAlice}"]`).count(), 0, "alice's conversation is nowhere in bob's DOM");
  assert.equal(await alice.locator('[data-testid="conversation-tab"]').count(), 1, 'alice has exactly her own tab');
  assert.equal(await alice.locator(`[data-conversation-id="${forBob}"]`).count(), 0, "bob's conversation is nowhere in alice's DOM");
  await waitText(tid(card(alice, forAlice), 'record-title'), /Ada Lovelace/);
  await waitText(tid(card(bob, forBob), 'record-title'), /Charles Babbage/);
  assert.equal(await bob.getByText('Ada Lovelace').count(), 0, "alice's caller's name never reaches bob's page");

  // Nor through the API with bob's session.
  const status = await bob.evaluate(async (id) => (await fetch(`/api/v1/conversations/${id}`)).status, forAlice);
  assert.ok(status === 403 || status === 404, `bob reading alice's conversation: ${status}`);

  // A reload (snapshot) does not bring it either.
  await bob.reload();
  await waitOnline(bob);
  await tab(bob, forBob).waitFor({ state: 'visible' });
  assert.equal(await bob.locator(`[data-conversation-id="${forAlice}"]`).count(), 0, 'not after a reload either');
});
