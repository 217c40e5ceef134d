// 11. Accessibility smoke test, in the 350 px wide side panel.

import assert from 'node:assert/strict';

import { callId, card, panelTest, signIn, tab, tid, until, waitAttr } from './harness.mjs';

/** Visible form controls and buttons without an accessible name. */
function unlabelled(page) {
  return page.evaluate(() => {
    const visible = (el) => !!(el.offsetWidth || el.offsetHeight || el.getClientRects().length);
    const named = (el) => {
      if (el.getAttribute('aria-label')?.trim()) return true;
      const by = el.getAttribute('aria-labelledby');
      if (by && by.split(/\s+/).some((id) => document.getElementById(id)?.textContent.trim())) return true;
      if (el.labels && [...el.labels].some((l) => l.textContent.trim())) return true;
      if (el.matches('button, a') && (el.textContent.trim() || el.getAttribute('title'))) return true;
      if (el.matches('input[type="submit"], input[type="button"]') && el.value) return true;
      return false;
    };
    return [...document.querySelectorAll('input:not([type="hidden"]), select, textarea, button, a[href]')]
      .filter((el) => visible(el) && !named(el))
      .map((el) => el.outerHTML.slice(0, 120));
  });
}

panelTest('accessibility: tabs with roles and aria-selected, keyboard navigation, labelled controls, no horizontal scroll at 350 px', async (env) => {
  const s = await env.server();
  await s.createRecord('contact', {
    name: 'Maximiliane Wilhelmina Featherstonehaugh-Cholmondeley',
    phone: '+14155550142',
    company: 'The Extraordinarily Long-Named International Consolidated Holding Company of Greater Metropolitan Areas',
  });
  const page = await env.page({ width: 350, height: 700 });
  await signIn(page, s);
  assert.deepEqual(await unlabelled(page), [], 'every control of the signed-in panel has an accessible name');
  assert.equal(await tid(page, 'connection').getAttribute('aria-live'), 'polite', 'the connection status is announced');

  const first = await s.newCall({ callId: callId('a11y-1'), from: '+14155550142' });
  await tab(page, first).waitFor({ state: 'visible' });
  const second = await s.newCall({ callId: callId('a11y-2'), from: '+14155550199' }); // no match: the create form
  await tab(page, second).waitFor({ state: 'visible' });
  await until('the second pop to be selected', async () => (await tab(page, second).getAttribute('aria-selected')) === 'true');

  // Roles.
  assert.equal(await page.locator('[role="tablist"]').count() >= 1, true, 'a tablist');
  const tabs = page.getByRole('tab');
  assert.equal(await tabs.count(), 2, 'two role=tab elements');
  for (const id of [first, second]) assert.equal(await tab(page, id).getAttribute('role'), 'tab');
  assert.notEqual(await tab(page, first).getAttribute('aria-selected'), 'true');
  assert.equal(await tab(page, second).getAttribute('aria-selected'), 'true');
  for (const id of [first, second]) assert.equal(await card(page, id).getAttribute('role'), 'tabpanel');
  assert.equal(await card(page, second).isVisible(), true);
  assert.equal(await card(page, first).isVisible(), false);

  // Arrow keys switch tabs (whatever order the panel puts them in).
  const [left, right] = await tabs.evaluateAll((els) => els.map((e) => e.getAttribute('data-conversation-id')));
  await tab(page, right).click();
  await tab(page, right).focus();
  await page.keyboard.press('ArrowLeft');
  await waitAttr(tab(page, left), 'aria-selected', 'true', { what: 'ArrowLeft to select the tab on the left' });
  assert.notEqual(await tab(page, right).getAttribute('aria-selected'), 'true');
  assert.equal(await card(page, left).isVisible(), true, 'ArrowLeft shows the card of the left tab');
  assert.equal(await card(page, right).isVisible(), false);
  assert.equal(await page.evaluate(() => document.activeElement?.getAttribute('data-testid')), 'conversation-tab', 'focus stays on the tabs');
  await page.keyboard.press('ArrowRight');
  await waitAttr(tab(page, right), 'aria-selected', 'true', { what: 'ArrowRight to select the tab on the right' });
  assert.notEqual(await tab(page, left).getAttribute('aria-selected'), 'true');

  // Tab moves from the selected tab into its card.
  await tab(page, right).focus();
  await page.keyboard.press('Tab');
  const inCard = await page.evaluate(() => document.activeElement?.closest('[data-testid="conversation"]')?.getAttribute('data-conversation-id') || null);
  assert.equal(inCard, right, 'the Tab key goes from the selected tab into its card');

  // Everything fits: no horizontal scrolling at 350 px, with either card shown.
  for (const id of [first, second]) {
    await tab(page, id).click();
    await card(page, id).waitFor({ state: 'visible' });
    const width = await page.evaluate(() => document.scrollingElement.scrollWidth);
    assert.ok(width <= 350, `no horizontal scroll at 350 px (scrollWidth ${width}) with card ${id}`);
    assert.deepEqual(await unlabelled(page), [], 'every control in the card has an accessible name');
  }
});
