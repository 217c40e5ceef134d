// A call whose end never arrives: the agent closes it from the card, and the hub records it
// as a missed call closed by her and writes it to the CRM once.

import assert from 'node:assert/strict';

import { DIALED, callId, card, panelTest, signIn, tid, waitAttr, waitMemorialized } from './harness.mjs';

panelTest('a ringing call whose hangup never comes is closed from its card and written once as missed', async (env) => {
  const s = await env.server();
  const page = await env.page({ width: 400, height: 800 });
  await signIn(page, s);
  const id = callId('stuck');
  await s.cti({ event: 'newCall', from: '+14155550177', to: DIALED, direction: 'in', callId: id, user: ['alice'] });
  const conv = await s.conversationByCall(id);
  const c = card(page, conv.id);
  await waitAttr(c, 'data-state', 'offered', { what: 'the call rings on the card' });
  // The PBX never sends the hangup. The card offers to close it, for this conversation.
  await tid(c, 'close-conversation').click();
  // Nobody answered it: like any missed call it is complete at once and goes to the CRM.
  await waitAttr(c, 'data-state', 'completed', { what: 'the closed call shows as done' });
  assert.equal(await tid(c, 'close-conversation').count(), 0, 'an ended call has nothing to close');
  const after = await s.conversationByCall(id);
  assert.equal(after.end_cause, 'closedByAgent');
  assert.equal(after.outcome, 'missed');
  assert.equal(after.attributes.closed_by, 'alice');
  await waitMemorialized(c);
  assert.equal((await s.conversationByCall(id)).memorialization.attempts, 1);
});
