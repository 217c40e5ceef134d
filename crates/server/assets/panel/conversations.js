// What frames of the stream and answers over HTTP do to the conversations: new entries, revisions, a new offer's pop.
import { announce, enc, h, serial } from "./dom.js";
import { callerText, entryTitle, hasDraft, KEEP_IDS, key, local, memoStatus, remember, session, state, STATE_WORDS } from "./state.js";
import { api } from "./api.js";
import { cifPop } from "./crm.js";
import { isClearable, isWorking, onTabKey, persistSoon, placeEntry, removeEntry, renderRecent, renderTab, restoreFromRecent, select, updateChrome } from "./tabs.js";
import { alertOffer } from "./alerts.js";

// card.js draws the cards, and their blocks act through this module (a chosen or created record,
// a wrap-up: the answers are merged here), so it cannot be imported here: panel.js hands it in.
let card = { build: () => {}, render: () => {} };
export function initConversations({ buildCard, renderCard }) { card = { build: buildCard, render: renderCard }; }
/** Draws a conversation's tab and card again (`force`: every part, not only what changed). */
export function renderEntry(e, force = false) { card.render(e, force); }

export async function refreshConversation(id) {
  try {
    const conv = await api("GET", `/conversations/${enc(id)}`);
    mergeConversation(conv);
  } catch (e) {
    if (e.status === 404 || e.status === 403) removeEntry(id);
  }
}

/** A frame (pop/update/end/snapshot entry): keep the highest revision per conversation. */
export function accept(ac, kind) {
  const conv = ac.conversation;
  const pop = ac.pop;
  if (!conv?.id) return;
  if (pop?.action === "disabled") return; // never shown: no tab, no card, no CIF call
  const id = conv.id;
  let e = state.entries.get(id);
  if (!e) {
    if (kind !== "pop" && state.dismissed.has(id)) return;
    // An update about a conversation another agent has: not ours (a transfer to us comes as a pop).
    if (kind !== "pop" && kind !== "snapshot" && conv.agent && conv.agent !== state.agent) return;
    if (kind === "pop" && state.dismissed.delete(id)) local.set(key("dismissed"), [...state.dismissed]);
    e = addEntry(conv, pop);
    if ((kind === "pop" || kind === "snapshot") && !state.popped.has(id)) onNewPop(e);
    else if (!state.selectedId) select(id);
    refreshRelated(e);
    persistSoon();
    return;
  }
  if (conv.revision < e.conv.revision) return; // an older frame
  // Same revision: a repeat, or a memorialization change (it does not bump the revision).
  // The socket is ordered, so a differing frame of the same revision is the newer one.
  if (conv.revision === e.conv.revision && JSON.stringify(conv) === JSON.stringify(e.conv) && JSON.stringify(pop || e.pop) === JSON.stringify(e.pop)) return;
  updateEntry(e, conv, pop || e.pop);
  if (kind === "pop" && !state.popped.has(id)) onNewPop(e);
}

const MEMO_RANK = { waiting: 0, pending: 1, failed: 2, written: 2 };

/** An HTTP answer carrying a ConversationView. It may cross a frame on the socket: at the same
 * revision, keep whichever memorialization status is further along. */
export function mergeConversation(conv) {
  if (!conv?.id) return;
  const e = state.entries.get(conv.id);
  if (!e || conv.revision < e.conv.revision) return;
  if (conv.revision === e.conv.revision) {
    const mine = e.conv.memorialization;
    if ((MEMO_RANK[memoStatus(e.conv)] ?? 0) >= (MEMO_RANK[memoStatus(conv)] ?? 0) && mine) conv = { ...conv, memorialization: mine };
    if (JSON.stringify(conv) === JSON.stringify(e.conv)) return;
  }
  updateEntry(e, conv, e.pop);
}

function updateEntry(e, conv, pop) {
  const prev = e.conv;
  e.conv = conv;
  e.pop = pop || { action: "nothing" };
  if (conv.agent === state.agent) e.wasMine = true;
  // Offered to several agents and answered by another one: this card is not ours to keep.
  if (conv.agent && conv.agent !== state.agent && conv.agent !== prev.agent && !e.wasMine && !hasDraft(e)) {
    announce(`${callerText(conv)} was answered by ${conv.agent}.`);
    state.dismissed.add(e.id);
    local.set(key("dismissed"), [...state.dismissed].slice(-KEEP_IDS));
    removeEntry(e.id);
    return;
  }
  if (conv.state === "completed" && e.completedSeen == null) e.completedSeen = Date.now();
  if (prev.state !== conv.state && !e.recent) placeEntry(e);
  renderEntry(e);
  if (e.recent && !isClearable(e)) restoreFromRecent(e); // e.g. its save failed after all
  else if (e.recent) renderRecent();
  const linksChanged = JSON.stringify([prev.selected, prev.pinned]) !== JSON.stringify([conv.selected, conv.pinned]);
  if (linksChanged || (prev.state !== "completed" && conv.state === "completed")) refreshRelated(e);
  persistSoon();
}

function onNewPop(e) {
  state.popped.add(e.id);
  session.set(key("popped"), [...state.popped].slice(-KEEP_IDS));
  const who = entryTitle(e);
  const caller = callerText(e.conv);
  const what = `New ${e.conv.channel || "conversation"} from ${caller}${who && who !== caller ? `, ${who}` : ""}${e.conv.queue ? `, queue ${e.conv.queue}` : ""}`;
  if (e.recent) restoreFromRecent(e);
  // The card the agent works on stays; the new offer is announced instead.
  const current = state.entries.get(state.selectedId);
  const stay = !!current && current !== e && isWorking(current);
  if (stay) {
    state.unseen.add(e.id);
    renderTab(e);
    announce(`${what}. Press Alt+N to show it.`);
  } else {
    select(e.id);
    announce(`${what}.`);
  }
  updateChrome();
  alertOffer({ id: e.id, title: `${STATE_WORDS[e.conv.state] || "New"}: ${who || caller}`, body: what, shown: !stay });
  cifPop(e);
}

/** A new conversation on screen: its entry, tab and card (not placed when it goes to Recent). */
export function addEntry(conv, pop, { recent = false } = {}) {
  const n = serial();
  const e = {
    id: conv.id,
    n,
    conv,
    recent,
    touchedAt: 0,
    // When the panel saw it complete (a conversation loaded complete: when the hub says).
    completedSeen: conv.state === "completed" ? Math.min(Date.now(), Date.parse(conv.completed_at || "") || Date.now()) : null,
    pop: pop || { action: "nothing" },
    wasMine: conv.agent === state.agent,
    known: new Map(), // "entity/id" → CandidateView: every record seen for this conversation
    related: null,
    relatedError: null,
    relatedBusy: false,
    relatedAgain: false,
    ui: {
      showCreate: false,
      searchResults: null,
      searchError: null,
      searchBusy: false,
      searchRan: false,
      wfOpen: null,
      editing: false,
      sent: false,
      retrying: false,
      chose: false,
      searched: false, // the agent ran a search (not the pop's own)
    },
    sig: {},
  };
  e.tab = h("button", {
    type: "button",
    role: "tab",
    class: "tab",
    id: `tab-${n}`,
    "aria-controls": `card-${n}`,
    "aria-selected": "false",
    tabindex: "-1",
    testid: "conversation-tab",
    data: { conversationId: conv.id },
    onclick: () => select(e.id, { focus: true }),
    onkeydown: onTabKey,
  });
  e.card = h("section", {
    class: "card",
    role: "tabpanel",
    id: `card-${n}`,
    "aria-labelledby": `tab-${n}`,
    tabindex: "0",
    testid: "conversation",
    data: { conversationId: conv.id },
    hidden: true,
  });
  card.build(e);
  state.entries.set(conv.id, e);
  if (!recent) placeEntry(e);
  renderEntry(e, true);
  renderRecent();
  updateChrome();
  return e;
}

/** Loads the customer card (the records, their timeline) and draws the card again. */
export async function refreshRelated(e) {
  if (e.relatedBusy) { e.relatedAgain = true; return; }
  e.relatedBusy = true;
  try {
    do {
      e.relatedAgain = false;
      try {
        const rel = await api("GET", `/conversations/${enc(e.id)}/related`);
        e.related = rel;
        e.relatedError = null;
        remember(e, rel?.records || []);
      } catch (err) {
        if (err.status === 404 && !state.entries.has(e.id)) return;
        e.relatedError = err.detail;
      }
      if (state.entries.get(e.id) === e) renderEntry(e);
    } while (e.relatedAgain);
  } finally {
    e.relatedBusy = false;
  }
}
