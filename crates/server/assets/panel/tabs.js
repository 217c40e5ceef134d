// The conversations on screen, a tab and a card each: their order, which one shows, New marks, Recent, dismissal.
import { $, $$, announce, clock, fill, h, once, timeFmt } from "./dom.js";
import { callerText, clearDraft, entryTitle, hasDraft, isDone, KEEP_IDS, key, local, MEMO_TEXT, memoStatus, queuedFor, session, state, takenByOther } from "./state.js";
import { cifEnd } from "./crm.js";

const KEEP_CONVERSATIONS = 60;
/** The Recent list keeps this many completed conversations; older ones are dismissed. */
const RECENT_MAX = 10;
/** After any click, key or pointer movement on a card it counts as worked on this long. */
const TOUCH_HOLD_MS = 15000;
/** Order of the tabs: the live call on top, then ringing calls, wrap-up, completed. */
const STATE_RANK = { connected: 0, offered: 1, ended: 2, completed: 3 };

// ---------------------------------------------------------------------------
// Entries: one tab + one card per conversation

/** Sort key of a tab: its state's rank, then the newest offer first. */
function order(x) {
  const at = Date.parse(x.conv.offered_at || "") || 0;
  return `${STATE_RANK[x.conv.state] ?? 4}\u0000${String(9e15 - at).padStart(16, "0")}\u0000${String(1e8 - x.n).padStart(9, "0")}`;
}

/** Puts a tab (and its card) where its state and offer time say: the live call on top,
 * then ringing calls newest first, then wrap-up, then completed ones. */
export function placeEntry(e) {
  const list = $("#tablist");
  if (!e.card.isConnected) $("#cards").append(e.card); // the order of cards does not matter: one shows
  const after = [...state.entries.values()].filter((x) => x !== e && x.tab.isConnected && order(x) > order(e)).sort((a, b) => (order(a) < order(b) ? -1 : 1))[0];
  const next = after ? after.tab : null;
  if (e.tab.isConnected && e.tab.nextElementSibling === next) return; // already there: moving it would drop focus
  const focused = document.activeElement === e.tab;
  list.insertBefore(e.tab, next);
  if (focused) e.tab.focus();
}

export function removeEntry(id) {
  const e = state.entries.get(id);
  if (!e) return;
  const tabs = $$('[role="tab"]', $("#tablist"));
  const index = tabs.indexOf(e.tab);
  const hadFocus = e.card.contains(document.activeElement) || e.tab === document.activeElement;
  e.tab.remove();
  e.card.remove();
  state.entries.delete(id);
  state.unseen.delete(id);
  renderRecent();
  if (state.selectedId === id) {
    state.selectedId = null;
    const rest = $$('[role="tab"]', $("#tablist"));
    const next = rest[Math.min(index, rest.length - 1)];
    if (next) select(next.dataset.conversationId, { focus: hadFocus });
    else if (hadFocus) $("#tablist").focus();
  }
  persistSoon();
  updateChrome();
}

/** Shows one conversation's card. */
export function select(id, { focus = false } = {}) {
  const chosen = state.entries.get(id);
  if (!chosen || chosen.recent) return;
  state.selectedId = id;
  if (state.unseen.delete(id)) renderTab(chosen);
  for (const e of state.entries.values()) {
    const on = e.id === id;
    e.tab.setAttribute("aria-selected", on ? "true" : "false");
    e.tab.tabIndex = on ? 0 : -1;
    e.card.hidden = !on;
  }
  session.set(key("selected"), id);
  const e = state.entries.get(id);
  tickClock(e);
  if (focus) e.tab.focus();
  updateChrome();
}

export function selectFallback() {
  const first = $('[role="tab"]', $("#tablist"));
  if (first) select(first.dataset.conversationId);
}

/** Whether the agent is working on this conversation's card, so that no new offer may take
 * the screen from it: a live call, after-call work, a draft, a queued wrap-up, pinned or
 * chosen records, an open form or workflow result, focus in the card, or any click, key or
 * pointer movement on it in the last moments. */
export function isWorking(e) {
  if (!e || e.recent || takenByOther(e)) return false;
  const c = e.conv;
  if (c.state === "connected" || (c.state === "ended" && !c.wrapped_up)) return true;
  if (hasDraft(e) || queuedFor(e) || e.ui.editing || e.ui.wfOpen || e.el?.wfForm?.childElementCount) return true;
  // Records and results count until the conversation is done with; after that only what
  // the agent is doing on the card right now does.
  if (!isDone(c) && (e.ui.chose || (c.pinned || []).length || e.ui.showCreate || e.ui.searched || e.el?.wfResult?.childElementCount)) return true;
  const a = document.activeElement;
  if (a && a !== e.card && e.card.contains(a)) return true;
  return Date.now() - (e.touchedAt || 0) < TOUCH_HOLD_MS;
}

/** Shows a conversation the agent asked for (offer bar, Alt+N, notification, Recent). */
export function showConversation(id) {
  const e = state.entries.get(id);
  if (!e) return;
  if (e.recent) restoreFromRecent(e);
  select(id, { focus: true });
}

/** The newest offer the agent has not looked at yet. */
export function newestUnseen() {
  return [...state.unseen].map((id) => state.entries.get(id)).filter(Boolean)
    .sort((a, b) => (order(a) < order(b) ? -1 : 1))[0] || null;
}

export function renderTab(e) {
  const c = e.conv;
  const title = entryTitle(e) || callerText(c);
  const memo = memoStatus(c);
  const unseen = state.unseen.has(e.id);
  const sig = JSON.stringify([title, c.state, c.channel, c.queue, c.customer_number, memo, takenByOther(e), unseen]);
  once(e, "tab", sig, () => {
    e.tab.dataset.state = c.state;
    e.tab.dataset.memorialization = memo;
    // The state in words where it asks something of the agent; the channel otherwise.
    const hint = { offered: "Ringing", ended: "Wrap-up", completed: memo === "failed" ? "Save failed" : "Completed" }[c.state] || c.channel;
    const sub = [hint, c.queue].filter(Boolean).map((x) => x[0].toUpperCase() + x.slice(1)).join(" · ");
    fill(e.tab, 
      h("span", { class: `dot dot-${c.state}${memo === "failed" ? " dot-failed" : ""}`, "aria-hidden": "true" }),
      h("span", { class: "tab-text" },
        h("span", { class: "tab-title" }, title),
        h("span", { class: "tab-sub" }, sub || c.direction)),
      c.state === "connected" ? h("span", { class: "sr-only" }, ", connected") : null,
      unseen ? h("span", { class: "tab-new", testid: "tab-new" }, "New") : null,
    );
  });
}

/** The running clock of the visible card: ringing/talking time, or the final duration. */
export function tickClock(e) {
  if (!e) return;
  const el = $(".elapsed", e.el.head);
  if (!el) return;
  const c = e.conv;
  let value;
  if (c.state === "offered" || c.state === "connected") {
    const since = Date.parse(c.state === "connected" ? c.connected_at || c.offered_at : c.offered_at);
    value = Number.isNaN(since) ? "" : clock((Date.now() - since) / 1000);
  } else {
    value = c.duration || "";
  }
  if (el.textContent !== value) el.textContent = value;
}

// ---------------------------------------------------------------------------
// Recent: completed conversations leave the tabs

export function isClearable(e) {
  return isDone(e.conv) && memoStatus(e.conv) !== "failed" && !queuedFor(e) && !hasDraft(e);
}

/** Moves completed conversations to Recent `recent_after_secs` after they completed, unless
 * the agent still works on one (a failed save, a queued or edited wrap-up stay as tabs). */
export function sweepRecent() {
  const after = Number(state.panel?.recent_after_secs ?? 120);
  if (!state.agent || !(after > 0)) return;
  const now = Date.now();
  let moved = false;
  for (const e of state.entries.values()) {
    if (e.recent || !isClearable(e) || e.completedSeen == null || now - e.completedSeen < after * 1000) continue;
    if (e.id === state.selectedId && (isWorking(e) || now - (e.touchedAt || 0) < after * 1000)) continue;
    toRecent(e);
    moved = true;
  }
  if (moved) { renderRecent(); updateChrome(); persistSoon(); }
}

function toRecent(e) {
  e.recent = true;
  state.unseen.delete(e.id);
  const wasSelected = state.selectedId === e.id;
  const hadFocus = e.card.contains(document.activeElement) || e.tab === document.activeElement;
  e.tab.remove();
  e.card.remove();
  if (wasSelected) {
    state.selectedId = null;
    selectFallback();
    if (hadFocus) (state.entries.get(state.selectedId)?.tab || $("#tablist")).focus();
  }
}

export function restoreFromRecent(e) {
  e.recent = false;
  e.completedSeen = e.conv.state === "completed" ? Date.now() : null;
  e.touchedAt = Date.now();
  placeEntry(e);
  renderRecent();
  updateChrome();
  persistSoon();
}

/** The Recent list, newest first; beyond RECENT_MAX the oldest are dismissed. */
export function renderRecent() {
  const recent = [...state.entries.values()].filter((e) => e.recent).sort((a, b) => (b.completedSeen || 0) - (a.completedSeen || 0));
  for (const old of recent.splice(RECENT_MAX)) if (isClearable(old)) dismiss(old, { quiet: true });
  $("#recent-count").textContent = String(recent.length);
  $("#recent").hidden = recent.length === 0;
  fill($("#recent-list"), recent.map((e) => {
    const title = entryTitle(e) || callerText(e.conv);
    const when = e.conv.completed_at || e.conv.ended_at;
    const memo = MEMO_TEXT[memoStatus(e.conv)] || memoStatus(e.conv);
    return h("li", null, h("button", {
      type: "button", class: "recent-item", testid: "recent-item", data: { conversationId: e.id },
      "aria-label": `Show the completed conversation with ${title}`,
      onclick: () => showConversation(e.id),
    }, h("span", { class: "recent-title" }, title), h("span", { class: "recent-meta" }, [when ? timeFmt.format(new Date(when)) : "", memo].filter(Boolean).join(" · "))));
  }));
}

/** "Clear completed": dismisses every completed conversation that needs nothing more. */
export function clearCompleted() {
  const done = [...state.entries.values()].filter(isClearable);
  for (const e of done) dismiss(e, { quiet: true });
  const kept = [...state.entries.values()].filter((e) => isDone(e.conv)).length;
  announce(`${done.length} completed conversation${done.length === 1 ? "" : "s"} cleared${kept ? `; ${kept} kept (a save failed or a wrap-up is pending)` : ""}.`);
}

export function onTabKey(ev) {
  const tabs = $$('[role="tab"]', $("#tablist"));
  const i = tabs.indexOf(ev.currentTarget);
  let j = null;
  if (ev.key === "ArrowRight" || ev.key === "ArrowDown") j = (i + 1) % tabs.length;
  else if (ev.key === "ArrowLeft" || ev.key === "ArrowUp") j = (i - 1 + tabs.length) % tabs.length;
  else if (ev.key === "Home") j = 0;
  else if (ev.key === "End") j = tabs.length - 1;
  if (j == null) return;
  ev.preventDefault();
  select(tabs[j].dataset.conversationId, { focus: true });
}

/** Empty state, tab list orientation, the window title (ringing count). */
export function updateChrome() {
  const all = [...state.entries.values()];
  const tabs = all.filter((e) => !e.recent).length;
  $("#empty").hidden = tabs > 0;
  $("#tablist").hidden = tabs === 0;
  $("#rail").hidden = all.length === 0;
  $("#rail-tools").hidden = !all.some((e) => e.recent || isDone(e.conv));
  const wide = window.matchMedia("(min-width: 760px)").matches;
  $("#tablist").setAttribute("aria-orientation", wide ? "vertical" : "horizontal");
  // A new call stays announced while it rings or talks; once it ended (or went to another
  // agent) its tab says so itself.
  for (const id of [...state.unseen]) {
    const x = state.entries.get(id);
    if (x && (x.conv.state === "offered" || x.conv.state === "connected") && !takenByOther(x)) continue;
    state.unseen.delete(id);
    if (x) renderTab(x);
  }
  const next = newestUnseen();
  const bar = $('[data-testid="offer-bar"]');
  bar.hidden = !next;
  if (next) {
    const n = state.unseen.size;
    $("#offer-text").textContent = `${n > 1 ? `${n} new calls — ` : "New call: "}${entryTitle(next) || callerText(next.conv)}`;
    bar.dataset.conversationId = next.id;
  }
  const ringing = all.filter((e) => e.conv.state === "offered").length;
  const unseen = state.unseen.size;
  document.title = unseen ? `(${unseen}) New call — cxbridge` : ringing ? `(${ringing}) Ringing — cxbridge` : "cxbridge agent panel";
}

export function persistSoon() {
  if (state.persistTimer || !state.agent) return;
  state.persistTimer = setTimeout(() => {
    state.persistTimer = null;
    if (!state.agent) return;
    const all = [...state.entries.values()].map((e) => ({
      conversation: e.conv, pop: e.pop, recent: e.recent || undefined, completed_seen: e.completedSeen ?? undefined, unseen: state.unseen.has(e.id) || undefined,
    }));
    local.set(key("conversations"), all.slice(-KEEP_CONVERSATIONS));
  }, 150);
}

export function dismiss(e, { quiet = false } = {}) {
  if (state.entries.get(e.id) !== e) return; // already gone
  if (!(isDone(e.conv) || takenByOther(e))) return;
  if (queuedFor(e)) {
    setCardError(e, "This wrap-up is still queued: it is sent when the connection is back. Dismiss it after that.");
    return;
  }
  cifEnd(e);
  state.dismissed.add(e.id);
  local.set(key("dismissed"), [...state.dismissed].slice(-KEEP_IDS));
  clearDraft(e);
  if (!quiet) announce(`Conversation with ${callerText(e.conv)} dismissed.`);
  removeEntry(e.id);
}

export function setCardError(e, message) {
  e.el.error.textContent = message || "";
  e.el.error.hidden = !message;
}
