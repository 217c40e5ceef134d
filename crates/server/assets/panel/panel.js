// cxbridge agent panel: sign-in, live conversations over the agent WebSocket, screen pop,
// customer card, workflows and wrap-up. Plain ES module, no dependencies, no build step.
// The page runs under a strict CSP: no inline scripts or styles, no eval, so everything
// below builds DOM nodes and sets classes; nothing is parsed from HTML strings.

import { $, $$, announce, append, enc, fill, formatWhen, h, humanize, nextId, once, serial, sleep, uuid } from "./dom.js";
import { callerText, clearDraft, draftKey, effectiveSelected, entityLabel, entryTitle, hasDraft, isDone, isPinned, KEEP_IDS, key, loadQueue, loadQueueSafe, local, MEMO_TEXT, memoStatus, queuedFor, refKey, remember, rememberPop, sameRef, saveQueue, session, state, STATE_WORDS, takenByOther } from "./state.js";
import { API, api, retryable, sessionLost, whenSessionLost } from "./api.js";
import { cifPop, looksLikePhone, phone, startCif } from "./crm.js";
import { clearCompleted, dismiss, isClearable, isWorking, newestUnseen, onTabKey, persistSoon, placeEntry, removeEntry, renderRecent, renderTab, restoreFromRecent, select, selectFallback, setCardError, showConversation, sweepRecent, tickClock, updateChrome } from "./tabs.js";
import { alertOffer, initAlerts } from "./alerts.js";

const RECONNECT_BASE_MS = 500;
const RECONNECT_MAX_MS = 5000;

const CONNECTION_TEXT = { online: "Online", offline: "Offline — reconnecting…", connecting: "Connecting…" };
const SKIP_REASONS = {
  anonymous: "The caller's number is withheld.",
  own_number: "The call comes from one of our own numbers.",
  internal: "Internal call.",
  invalid: "The caller's number is not a valid number.",
  crm_error: "The CRM did not answer in time; search by hand.",
};

// ---------------------------------------------------------------------------
// Views: boot, sign-in, app

function showView(name) {
  $("#boot-view").hidden = name !== "boot";
  $("#signin-view").hidden = name !== "signin";
  $("#app-view").hidden = name !== "app";
  $("#topbar-session").hidden = name !== "app";
}

function showAppError(message) {
  const el = $("#app-error");
  el.textContent = message || "";
  el.hidden = !message;
}

function showSignin(message) {
  showView("signin");
  const err = $('[data-testid="signin-error"]');
  err.textContent = message || "";
  err.hidden = !message;
  const agentInput = $("#signin-agent");
  if (!agentInput.value && state.agent) agentInput.value = state.agent;
  (agentInput.value ? $("#signin-password") : agentInput).focus();
}

async function onSignin(ev) {
  ev.preventDefault();
  const form = ev.currentTarget;
  const agent = form.agent.value.trim();
  const password = form.password.value;
  const err = $('[data-testid="signin-error"]');
  if (!agent || !password) {
    err.textContent = "Enter your agent id and your password or access token.";
    err.hidden = false;
    return;
  }
  const button = $('button[type="submit"]', form);
  button.disabled = true;
  button.textContent = "Signing in…";
  try {
    const s = await api("POST", "/session", { agent, password });
    form.password.value = "";
    err.hidden = true;
    await start(s);
  } catch (e) {
    err.textContent = e.detail || "Sign-in failed.";
    err.hidden = false;
    form.password.select();
  } finally {
    button.disabled = false;
    button.textContent = "Sign in";
  }
}

async function onSignout() {
  const button = $('[data-testid="signout"]');
  button.disabled = true;
  try {
    await api("DELETE", "/session");
  } catch (e) {
    if (e.status !== 401) {
      showAppError(`Could not sign out: ${e.detail}`);
      button.disabled = false;
      return;
    }
  }
  button.disabled = false;
  showAppError("");
  leaveAgent();
  state.session = null;
  showSignin("You are signed out.");
}

/** A request came back 401: the session expired or was revoked. Keep everything, ask to sign in. */
let sessionCheck = null;
function checkSession() {
  if (sessionCheck || !state.session) return;
  sessionCheck = fetch(`${API}/session`, { credentials: "same-origin", cache: "no-store" })
    .then((res) => {
      if (res.status === 401 && state.session) {
        state.session = null;
        closeStream();
        showSignin("Your session has ended. Sign in again to continue; nothing is lost.");
      }
    })
    .catch(() => { /* offline: the stream's reconnect tries again */ })
    .finally(() => { sessionCheck = null; });
}

async function boot() {
  wireStatic();
  showView("boot");
  for (let delay = 1000; ; delay = Math.min(delay * 2, 10000)) {
    try {
      const s = await api("GET", "/session");
      await start(s);
      return;
    } catch (e) {
      if (e.status === 401) {
        showSignin();
        return;
      }
      $("#boot-message").textContent = `Cannot reach cxbridge (${e.detail}) Retrying…`;
      await sleep(delay);
    }
  }
}

async function start(s) {
  if (state.agent !== s.agent) leaveAgent();
  state.session = s;
  let panel = null;
  for (let delay = 1000; !panel; delay = Math.min(delay * 2, 10000)) {
    try {
      panel = await api("GET", "/panel");
    } catch (e) {
      if (e.status === 401) { showSignin("Your session has ended. Sign in again."); return; }
      showView("boot");
      $("#boot-message").textContent = `Cannot load the panel (${e.detail}) Retrying…`;
      await sleep(delay);
    }
  }
  state.panel = panel;
  state.session = panel.session || s;
  $('[data-testid="whoami"]').textContent = state.session.name || state.session.agent;
  $('[data-testid="whoami"]').title = `Signed in as ${state.session.agent}${state.session.supervisor ? " (supervisor)" : ""}`;
  showView("app");
  showAppError("");
  if (state.agent !== state.session.agent) enterAgent(state.session.agent);
  for (const e of state.entries.values()) renderEntry(e, true);
  connect();
  startCif();
}

/** Loads what this browser kept for the agent: open cards, popped/dismissed ids. */
function enterAgent(agent) {
  state.agent = agent;
  state.firstSnapshot = true;
  state.popped = new Set(session.get(key("popped"), []));
  state.dismissed = new Set(local.get(key("dismissed"), []));
  state.unseen.clear();
  initAlerts({ keyFor: (name) => key(`alerts:${name}`), open: (id) => showConversation(id) });
  const cached = local.get(key("conversations"), []);
  for (const ac of cached) {
    if (!ac?.conversation?.id || ac.pop?.action === "disabled" || state.dismissed.has(ac.conversation.id)) continue;
    if (state.entries.has(ac.conversation.id)) continue;
    const e = addEntry(ac.conversation, ac.pop, { recent: !!ac.recent });
    if (Number.isFinite(ac.completed_seen)) e.completedSeen = Math.min(Date.now(), ac.completed_seen);
    if (ac.unseen) state.unseen.add(e.id);
    refreshRelated(e);
  }
  const remembered = session.get(key("selected"), null);
  if (remembered && state.entries.has(remembered)) select(remembered);
  if (!state.selectedId) selectFallback();
  updateChrome();
}

/** Drops the in-memory view (sign-out or another agent signs in). Storage is kept per agent. */
function leaveAgent() {
  closeStream();
  for (const e of state.entries.values()) { e.tab.remove(); e.card.remove(); }
  state.entries.clear();
  state.selectedId = null;
  state.agent = null;
  $("#dial-entries").replaceChildren();
  $('[data-testid="dial-log"]').hidden = true;
  updateChrome();
}

// ---------------------------------------------------------------------------
// Agent stream

function setConn(conn) {
  state.conn = conn;
  const el = $('[data-testid="connection"]');
  if (el.dataset.state !== conn) {
    el.dataset.state = conn;
    el.textContent = CONNECTION_TEXT[conn];
  }
  for (const e of state.entries.values()) syncWrapupStatus(e);
}

function connect() {
  clearTimeout(state.reconnectTimer);
  state.reconnectTimer = null;
  if (!state.session || state.ws) return;
  if (state.conn !== "offline") setConn("connecting");
  const url = new URL(`${API}/agents/${enc(state.agent)}/stream`, location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  let ws;
  try {
    ws = new WebSocket(url);
  } catch {
    scheduleReconnect();
    return;
  }
  state.ws = ws;
  let opened = false;
  ws.onopen = () => { opened = true; };
  ws.onmessage = (ev) => {
    if (state.ws !== ws) return;
    let msg;
    try { msg = JSON.parse(ev.data); } catch { return; }
    handleMessage(msg);
  };
  ws.onclose = (ev) => {
    if (state.ws !== ws) return;
    state.ws = null;
    setConn("offline");
    // An upgrade refused with 401 shows only as a failed connection; 4401/4403 close a stream
    // whose session ended.
    if (!opened || ev.code === 4401 || ev.code === 4403) sessionLost();
    scheduleReconnect();
  };
}

function closeStream() {
  clearTimeout(state.reconnectTimer);
  state.reconnectTimer = null;
  const ws = state.ws;
  state.ws = null;
  if (ws) try { ws.close(1000, "bye"); } catch { /* ignore */ }
  setConn("connecting");
}

function scheduleReconnect() {
  if (!state.session || state.reconnectTimer) return;
  const base = Math.min(RECONNECT_MAX_MS, RECONNECT_BASE_MS * 2 ** state.attempt);
  state.attempt = Math.min(state.attempt + 1, 10);
  const delay = Math.round(base * (0.6 + Math.random() * 0.4));
  state.reconnectTimer = setTimeout(() => { state.reconnectTimer = null; connect(); }, delay);
}

function handleMessage(msg) {
  switch (msg.type) {
    case "snapshot":
      onSnapshot(Array.isArray(msg.conversations) ? msg.conversations : []);
      break;
    case "pop":
    case "update":
    case "end":
      accept(msg, msg.type);
      break;
    default:
      break;
  }
}

function onSnapshot(list) {
  state.attempt = 0;
  setConn("online");
  const seen = new Set();
  for (const ac of list) {
    if (!ac?.conversation?.id) continue;
    seen.add(ac.conversation.id);
    accept(ac, "snapshot");
  }
  // Conversations the panel shows but the snapshot lacks have completed (or moved) meanwhile:
  // ask for each, unless it is completed and saved already.
  for (const e of [...state.entries.values()]) {
    if (seen.has(e.id)) continue;
    if (!state.firstSnapshot && e.conv.state === "completed" && memoStatus(e.conv) === "written") continue;
    refreshConversation(e.id);
  }
  state.firstSnapshot = false;
  flushQueue();
}

async function refreshConversation(id) {
  try {
    const conv = await api("GET", `/conversations/${enc(id)}`);
    mergeConversation(conv);
  } catch (e) {
    if (e.status === 404 || e.status === 403) removeEntry(id);
  }
}

/** A frame (pop/update/end/snapshot entry): keep the highest revision per conversation. */
function accept(ac, kind) {
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
function mergeConversation(conv) {
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
function addEntry(conv, pop, { recent = false } = {}) {
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
  buildCard(e);
  state.entries.set(conv.id, e);
  if (!recent) placeEntry(e);
  renderEntry(e, true);
  renderRecent();
  updateChrome();
  return e;
}

// ---------------------------------------------------------------------------
// Card layout

function buildCard(e) {
  const s = (e.el = {});
  s.head = h("header", { class: "card-head" });
  s.error = h("div", { class: "card-error", role: "alert", hidden: true });
  s.pop = h("section", { class: "block block-pop", "aria-label": "Screen pop" });
  s.customer = h("section", { class: "block block-customer", "aria-label": "Customer card" });
  s.workflows = h("section", { class: "block block-workflows", "aria-label": "Workflows" });
  s.wrapup = h("section", { class: "block block-wrapup", "aria-label": "Wrap-up" });
  const main = h("div", { class: "card-col card-col-main" }, s.pop, s.customer);
  const side = h("div", { class: "card-col card-col-side" }, s.wrapup, s.workflows);
  append(e.card, [s.head, s.error, h("div", { class: "card-body" }, main, side)]);
  buildWrapup(e);
  buildWorkflows(e);
}

/** Draws a conversation's tab and card, each part only when it changed (`force`: all of them). */
function renderEntry(e, force = false) {
  if (force) e.sig = {};
  rememberPop(e);
  const c = e.conv;
  e.card.dataset.state = c.state;
  e.card.dataset.popAction = e.pop.action;
  e.card.classList.toggle("is-other", takenByOther(e));
  renderTab(e);
  renderHead(e);
  renderPop(e);
  renderCustomer(e);
  syncWrapup(e);
  syncRecordButtons(e);
  updateChrome();
}

function renderHead(e) {
  const c = e.conv;
  const title = entryTitle(e);
  const sig = JSON.stringify([title, c.state, c.outcome, c.customer_number, c.channel, c.queue, c.direction, c.agent, c.duration, c.timed_out, c.campaign, c.transfers?.length]);
  once(e, "head", sig, () => {
    const canDismiss = isDone(c) || takenByOther(e);
    // A PBX may never send the end of a call: the agent closes it by hand (the hub records who).
    const canClose = (c.state === "offered" || c.state === "connected") && !takenByOther(e);
    const others = takenByOther(e) ? h("p", { class: "note note-warn" }, isDone(c) ? `Handled by ${c.agent}.` : `Now with ${c.agent}.`) : null;
    fill(e.el.head, 
      h("div", { class: "head-top" },
        h("div", { class: "who" },
          h("h2", { class: "who-title" }, title || (c.customer_number ? "Unknown customer" : "Unknown caller")),
          c.customer_number ? phone(c.customer_number, { testid: "caller", class: "who-number" }) : h("span", { class: "who-number muted", testid: "caller" }, "")),
        h("div", { class: "head-side" },
          h("span", { class: `badge badge-${c.state}`, testid: "call-state", data: { state: c.state } }, STATE_WORDS[c.state] || c.state),
          canClose ? h("button", { type: "button", class: "btn btn-quiet btn-small", testid: "close-conversation", title: "The call's end never arrived: close it here", "aria-label": `Close conversation with ${callerText(c)}`, onclick: () => closeConversation(e) }, "Close") : null,
          canDismiss ? h("button", { type: "button", class: "btn btn-quiet btn-small", testid: "dismiss", "aria-label": `Dismiss conversation with ${callerText(c)}`, onclick: () => dismiss(e) }, "Dismiss") : null)),
      h("ul", { class: "meta", "aria-label": "Conversation" },
        h("li", null, h("span", { class: "sr-only" }, "Channel: "), h("span", { class: "cap", testid: "channel" }, c.channel)),
        h("li", null, h("span", { class: "sr-only" }, "Direction: "), h("span", { class: "cap", testid: "direction" }, c.direction)),
        h("li", null, h("span", { class: "meta-label" }, "Queue "), h("span", { testid: "queue" }, c.queue || "—")),
        c.campaign ? h("li", null, h("span", { class: "meta-label" }, "Campaign "), c.campaign) : null,
        h("li", { class: "elapsed", "aria-label": "Duration" }, ""),
        c.outcome && c.outcome !== "answered" ? h("li", { class: `outcome outcome-${c.outcome}` }, humanize(c.outcome)) : null,
        c.transfers?.length ? h("li", null, `${c.transfers.length} transfer${c.transfers.length > 1 ? "s" : ""}`) : null,
        c.timed_out ? h("li", { class: "muted" }, "closed by timeout") : null),
      others,
    );
    // The blocks that write say whom they write about (the card may be one of several).
    const about = `· ${title || callerText(c)}`;
    if (e.el.wrapFor) e.el.wrapFor.textContent = about;
    if (e.el.workflowsFor) e.el.workflowsFor.textContent = about;
    tickClock(e);
  });
}

// ---------------------------------------------------------------------------
// Screen pop

function renderPop(e) {
  const p = e.pop;
  const c = e.conv;
  const sig = JSON.stringify([p, c.identification?.outcome, !!c.selected, e.ui.showCreate]);
  once(e, "pop", sig, () => {
    const box = e.el.pop;
    box.replaceChildren();
    const identification = c.identification || {};
    if (p.reason && p.action !== "unidentified") box.append(h("p", { class: "note" }, p.reason));
    switch (p.action) {
      case "open":
        if (p.matched && p.record && !sameRef(p.matched, p.record)) {
          box.append(h("p", { class: "matched" }, "Caller matched ", h("strong", null, p.matched.title || p.matched.id), ` (${entityLabel(p.matched.entity)}); opened:`));
        }
        if (p.record) box.append(recordView(e, p.record, { testid: "pop-record" }));
        break;
      case "list": {
        const records = p.records?.length ? p.records : identification.candidates || [];
        box.append(h("h3", { class: "block-title" }, `${records.length} matching records — choose the customer`));
        box.append(h("ul", { class: "candidates", testid: "candidates" }, records.map((r) => h("li", { class: "candidate-row" },
          h("button", { type: "button", class: "candidate", testid: "candidate", data: { recordId: r.id, entity: r.entity }, "aria-pressed": "false", onclick: () => chooseRecord(e, r) },
            h("span", { class: "candidate-title" }, r.title || r.id),
            h("span", { class: "candidate-entity" }, entityLabel(r.entity)),
            r.display?.length ? h("span", { class: "candidate-sub" }, r.display.map((d) => d.value).filter(Boolean).join(" · ")) : null),
          pinButton(e, r)))));
        break;
      }
      case "search":
        box.append(h("h3", { class: "block-title" }, "No automatic match — search the CRM"));
        box.append(searchForm(e, p.entity, p.query ?? c.customer_number));
        break;
      case "create":
        if (c.selected && !e.ui.showCreate) {
          box.append(h("p", { class: "note note-ok" }, "Record created and selected."),
            h("button", { type: "button", class: "btn btn-quiet btn-small", onclick: () => { e.ui.showCreate = true; renderPop(e); } }, `New ${entityLabel(p.entity)}…`));
        } else {
          box.append(h("h3", { class: "block-title" }, "New caller — no record found"));
          box.append(createForm(e, p.entity, p.prefill || {}));
        }
        break;
      case "unidentified": {
        const why = p.reason || identification.reason;
        box.append(h("h3", { class: "block-title" }, identification.outcome === "pending" ? "Identifying the caller…" : "Caller not identified"),
          h("p", { class: "note" }, SKIP_REASONS[why] || why || "No automatic identification for this conversation."));
        if (searchWorkflow(null)) box.append(searchForm(e, null, ""));
        const entity = defaultCreateEntity();
        if (entity) {
          if (e.ui.showCreate) box.append(createForm(e, entity.name, phonePrefill(entity.create_fields || [], c)));
          else if (!c.selected) box.append(h("button", { type: "button", class: "btn btn-quiet btn-small", onclick: () => { e.ui.showCreate = true; renderPop(e); } }, `New ${entity.label || humanize(entity.name)}…`));
        }
        break;
      }
      case "nothing":
      default:
        box.append(h("p", { class: "no-record" }, "No record"),
          h("p", { class: "muted small" }, "No screen pop for this conversation."));
        break;
    }
  });
}

/** A record: title, entity, display fields in order, and pin. */
function recordView(e, r, { testid = null, actions = [] } = {}) {
  const display = r.display?.length
    ? r.display
    : Object.entries(r.fields || {}).slice(0, 6).map(([k, v]) => ({ label: humanize(k), value: v }));
  return h("article", { class: "record", testid, data: { recordId: r.id, entity: r.entity } },
    h("div", { class: "record-head" },
      h("h3", { class: "record-title", testid: testid === "pop-record" ? "record-title" : null }, r.title || "(no name)"),
      h("span", { class: "chip" }, entityLabel(r.entity))),
    display.length
      ? h("dl", { class: "fields" }, display.map((d) => h("div", { class: "field-row", testid: testid === "pop-record" ? "display-field" : null },
        h("dt", { testid: testid === "pop-record" ? "display-label" : null }, d.label),
        h("dd", { testid: testid === "pop-record" ? "display-value" : null }, looksLikePhone(d.value) ? phone(d.value) : d.value))))
      : null,
    h("div", { class: "record-actions" }, actions, pinButton(e, r)));
}

/** pin / unpin toggle; its test id follows its state (synced after every links change). */
function pinButton(e, r) {
  const ref = { entity: r.entity, id: r.id };
  const b = h("button", { type: "button", class: "btn btn-quiet btn-small pin-toggle", data: { pinEntity: r.entity, pinId: r.id }, onclick: () => togglePin(e, ref) });
  syncPinButton(e, b);
  return b;
}

function syncPinButton(e, b) {
  const pinned = isPinned(e, { entity: b.dataset.pinEntity, id: b.dataset.pinId });
  const want = pinned ? "unpin" : "pin";
  if (b.dataset.testid === want) return;
  b.setAttribute("data-testid", want);
  b.setAttribute("aria-pressed", pinned ? "true" : "false");
  b.textContent = pinned ? "Unpin" : "Pin";
  b.setAttribute("aria-label", `${pinned ? "Unpin" : "Pin"} ${e.known.get(`${b.dataset.pinEntity}/${b.dataset.pinId}`)?.title || "record"}`);
}

/** Pin toggles and the chosen candidate follow the conversation's links without a rebuild. */
function syncRecordButtons(e) {
  for (const b of $$(".pin-toggle", e.card)) syncPinButton(e, b);
  const sel = e.conv.selected;
  for (const b of $$('[data-testid="candidate"], [data-testid="search-result"], .wf-select', e.card)) {
    const on = !!sel && sel.entity === b.dataset.entity && sel.id === b.dataset.recordId;
    b.setAttribute("aria-pressed", on ? "true" : "false");
    b.classList.toggle("is-selected", on);
  }
}

function searchWorkflow(entity) {
  const wfs = state.panel?.workflows || [];
  return wfs.find((w) => w.action === "search" && (!entity || w.entity === entity)) || null;
}

function defaultCreateEntity() {
  const entities = state.panel?.entities || [];
  return entities.find((x) => x.create_fields?.length) || null;
}

function phonePrefill(fields, conv) {
  const out = {};
  const f = fields.find((x) => /phone|mobile|tel/i.test(x));
  if (f && conv.customer_number) out[f] = conv.customer_e164 || conv.customer_number;
  return out;
}

function searchForm(e, entity, query) {
  const wf = searchWorkflow(entity);
  const inputId = nextId("search");
  const input = h("input", { id: inputId, type: "search", name: "text", testid: "search-text", value: e.ui.searchText ?? query ?? "", autocomplete: "off", oninput: (ev) => { e.ui.searchText = ev.target.value; } });
  const results = h("div", { class: "search-results", role: "status", "aria-live": "polite" });
  const submit = h("button", { type: "submit", class: "btn btn-secondary", disabled: !wf }, "Search");
  const form = h("form", { class: "search-form", testid: "search-form", role: "search", onsubmit: (ev) => { ev.preventDefault(); e.ui.searched = true; runSearch(e, wf, input.value, results, submit); } },
    h("label", { for: inputId }, wf ? `Search ${entityLabel(wf.entity)}` : "Search"),
    h("div", { class: "inline-input" }, input, submit),
    wf ? null : h("p", { class: "muted small" }, "No search workflow is configured."),
    results);
  renderSearchResults(e, results);
  if (wf && !e.ui.searchRan && (query || "").trim()) {
    e.ui.searchRan = true;
    queueMicrotask(() => runSearch(e, wf, input.value, results, submit));
  }
  return form;
}

async function runSearch(e, wf, text, results, submit) {
  if (!wf) return;
  if (!text.trim()) { e.ui.searchError = "Type a name, number or e-mail to search."; renderSearchResults(e, results); return; }
  e.ui.searchBusy = true;
  submit.disabled = true;
  renderSearchResults(e, results);
  try {
    const res = await api("POST", `/workflows/${enc(wf.name)}`, { text: text.trim(), conversation_id: e.id });
    e.ui.searchResults = res.records || [];
    e.ui.searchError = null;
    remember(e, e.ui.searchResults);
  } catch (err) {
    e.ui.searchError = err.detail;
  } finally {
    e.ui.searchBusy = false;
    submit.disabled = false;
  }
  const live = $('[data-testid="search-form"] .search-results', e.card) || results;
  renderSearchResults(e, live);
}

function renderSearchResults(e, box) {
  box.replaceChildren();
  if (e.ui.searchBusy) box.append(h("p", { class: "muted small" }, "Searching…"));
  else if (e.ui.searchError) box.append(h("p", { class: "form-error" }, e.ui.searchError));
  else if (e.ui.searchResults) {
    if (!e.ui.searchResults.length) box.append(h("p", { class: "muted small" }, "No records found."));
    else box.append(h("ul", { class: "candidates" }, e.ui.searchResults.map((r) => h("li", { class: "candidate-row" },
      h("button", { type: "button", class: "candidate", testid: "search-result", data: { recordId: r.id, entity: r.entity }, "aria-pressed": "false", onclick: () => chooseRecord(e, r) },
        h("span", { class: "candidate-title" }, r.title || r.id),
        h("span", { class: "candidate-entity" }, entityLabel(r.entity)),
        r.display?.length ? h("span", { class: "candidate-sub" }, r.display.map((d) => d.value).filter(Boolean).join(" · ")) : null),
      pinButton(e, r)))));
  }
  syncRecordButtons(e);
}

function inputFor(field, value, { required = false } = {}) {
  const id = nextId("f");
  const type = /e-?mail/i.test(field) ? "email" : /phone|mobile|tel|fax/i.test(field) ? "tel" : "text";
  return h("div", { class: "field" },
    h("label", { for: id }, humanize(field), required ? h("span", { class: "req", "aria-hidden": "true" }, " *") : null),
    h("input", { id, name: field, type, value: value ?? "", required, autocomplete: "off" }));
}

function createForm(e, entityName, prefill) {
  const spec = state.panel?.entities?.find((x) => x.name === entityName);
  const fields = [...(spec?.create_fields || [])];
  for (const k of Object.keys(prefill)) if (!fields.includes(k)) fields.push(k);
  if (!fields.length) fields.push("name", "phone");
  const error = h("p", { class: "form-error", role: "alert", hidden: true });
  const submit = h("button", { type: "submit", class: "btn btn-primary", testid: "create-submit" }, `Create ${entityLabel(entityName)}`);
  const form = h("form", { class: "create-form", testid: "create-form", data: { entity: entityName }, "aria-label": `New ${entityLabel(entityName)}`,
    onsubmit: async (ev) => {
      ev.preventDefault();
      const values = {};
      for (const [k, v] of new FormData(form)) if (String(v).trim()) values[k] = String(v).trim();
      if (!Object.keys(values).length) { error.textContent = "Fill in at least one field."; error.hidden = false; return; }
      submit.disabled = true;
      submit.textContent = "Creating…";
      try {
        const res = await api("POST", `/conversations/${enc(e.id)}/records`, { entity: entityName, fields: values });
        remember(e, [res.record]);
        e.ui.showCreate = false;
        announce(`${entityLabel(entityName)} ${res.record?.title || ""} created.`);
        mergeConversation(res.conversation);
        e.sig.pop = null;
        renderEntry(e);
        refreshRelated(e);
      } catch (err) {
        error.textContent = err.detail;
        error.hidden = false;
        submit.disabled = false;
        submit.textContent = `Create ${entityLabel(entityName)}`;
      }
    } },
  fields.map((f) => inputFor(f, prefill[f], { required: spec?.title_field === f })),
  error,
  h("div", { class: "form-actions" }, submit));
  return form;
}

async function chooseRecord(e, r) {
  e.ui.chose = true;
  remember(e, [r]);
  if (sameRef(e.conv.selected, r)) return;
  await links(e, { selected: { entity: r.entity, id: r.id } }, `${r.title || "Record"} selected.`);
}

async function togglePin(e, ref) {
  const pinned = e.conv.pinned || [];
  const next = isPinned(e, ref) ? pinned.filter((p) => !sameRef(p, ref)) : [...pinned, { entity: ref.entity, id: ref.id }];
  const title = e.known.get(refKey(ref))?.title || "Record";
  await links(e, { pinned: next }, `${title} ${next.length > pinned.length ? "pinned" : "unpinned"}.`);
}

async function links(e, body, done) {
  setCardError(e, null);
  try {
    // Records found or created for this conversation carry the grant that lets us link them.
    const refs = [body.selected, ...(body.pinned || [])].filter(Boolean);
    const grants = refs.map((r) => e.known.get(refKey(r))?.grant).filter(Boolean);
    const conv = await api("PUT", `/conversations/${enc(e.id)}/links`, grants.length ? { ...body, grants } : body);
    mergeConversation(conv);
    if (done) announce(done);
    refreshRelated(e);
  } catch (err) {
    setCardError(e, err.detail);
  }
}

/** Ends this card's conversation on the hub (its end never came); names the id explicitly. */
async function closeConversation(e) {
  const id = e.id;
  try {
    const conv = await api("POST", `/conversations/${enc(id)}/close`, {});
    mergeConversation(conv);
    announce(`Conversation with ${callerText(conv)} closed.`);
  } catch (err) {
    setCardError(e, err.detail);
  }
}

// ---------------------------------------------------------------------------
// Customer card: the record the activity is about, pinned records, related interactions

/** Loads the customer card (the records, their timeline) and draws the card again. */
async function refreshRelated(e) {
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

function shownAbove(e, ref) {
  return $$(".pin-toggle", e.el.pop).some((b) => b.dataset.pinEntity === ref.entity && b.dataset.pinId === ref.id);
}

function renderCustomer(e) {
  const c = e.conv;
  const sel = effectiveSelected(e);
  const sig = JSON.stringify([sel, sel && shownAbove(e, sel), c.pinned, e.related, e.relatedError, sel && e.known.get(refKey(sel)), (c.pinned || []).map((p) => e.known.get(refKey(p))?.title)]);
  once(e, "customer", sig, () => {
    const box = e.el.customer;
    fill(box, h("h3", { class: "block-title" }, "Customer"));
    if (sel) {
      const rec = e.known.get(refKey(sel));
      const showFields = e.pop.action !== "open" || !sameRef(sel, e.pop.record);
      box.append(h("div", { class: "selected", testid: "selected-record", data: { recordId: sel.id, entity: sel.entity } },
        h("p", { class: "selected-line" },
          h("span", { class: "muted" }, "Activity about "),
          h("strong", null, rec?.title || sel.id), " ",
          h("span", { class: "chip" }, entityLabel(sel.entity))),
        showFields && rec?.display?.length
          ? h("dl", { class: "fields fields-compact" }, rec.display.map((d) => h("div", { class: "field-row" }, h("dt", null, d.label), h("dd", null, looksLikePhone(d.value) ? phone(d.value) : d.value))))
          : null,
        // One pin toggle per record and card: none here when the record is shown above with its own.
        shownAbove(e, sel) ? null : h("div", { class: "record-actions" }, pinButton(e, { entity: sel.entity, id: sel.id }))));
    } else {
      box.append(h("p", { class: "muted small" }, e.pop.action === "list" ? "Choose a record above: the activity will be linked to it." : "No record selected: the activity is saved without a customer link."));
    }
    const pinned = c.pinned || [];
    box.append(h("h4", { class: "sub-title", id: `pinned-${e.n}` }, "Pinned"));
    const list = h("ul", { class: "pinned", testid: "pinned", "aria-labelledby": `pinned-${e.n}` }, pinned.map((p) => {
      const rec = e.known.get(refKey(p));
      return h("li", { class: "pinned-record", testid: "pinned-record", data: { recordId: p.id, entity: p.entity } },
        h("span", { class: "pinned-title" }, rec?.title || p.id),
        h("span", { class: "chip" }, entityLabel(p.entity)),
        h("button", { type: "button", class: "btn btn-quiet btn-small", testid: "unpin", "aria-label": `Unpin ${rec?.title || p.id}`, onclick: () => togglePin(e, p) }, "Unpin"));
    }));
    // An empty list keeps a placeholder item (not a pinned-record), so the list itself stays visible.
    if (!pinned.length) list.append(h("li", { class: "list-empty muted small" }, "Pin records to link them to this interaction too."));
    box.append(list);

    box.append(h("h4", { class: "sub-title", id: `related-${e.n}` }, "Related interactions"));
    const items = e.related?.interactions || [];
    const related = h("ol", { class: "related", testid: "related", "aria-labelledby": `related-${e.n}` }, items.map((it) => h("li", { class: "related-item", testid: "related-item", data: { kind: it.kind } },
      h("div", { class: "related-top" },
        h("time", { datetime: it.at }, formatWhen(it.at)),
        h("span", { class: `chip chip-${it.kind}` }, it.kind === "conversation" ? [it.channel || "conversation", it.direction ? ` · ${it.direction}` : ""].join("") : "activity")),
      h("div", { class: "related-subject" }, it.subject || "(no subject)"),
      it.outcome || it.disposition ? h("div", { class: "related-sub muted small" }, [it.outcome, it.disposition].filter(Boolean).join(" · ")) : null)));
    const empty = (text) => related.append(h("li", { class: "list-empty muted small" }, text));
    if (e.relatedError) empty(`Related interactions unavailable: ${e.relatedError}`);
    else if (!e.related) empty("Loading…");
    else if (!items.length) empty("No earlier interactions.");
    box.append(related);
  });
}

// ---------------------------------------------------------------------------
// Workflows

function buildWorkflows(e) {
  const wfs = state.panel?.workflows || [];
  const box = e.el.workflows;
  box.replaceChildren();
  box.hidden = !wfs.length;
  if (!wfs.length) return;
  e.el.wfForm = h("div", { class: "wf-form" });
  e.el.wfResult = h("div", { class: "wf-result", testid: "workflow-result", role: "status", "aria-live": "polite" });
  e.el.workflowsFor = h("span", { class: "acting-on", testid: "workflows-for" });
  box.append(h("h3", { class: "block-title" }, "Workflows ", e.el.workflowsFor),
    h("div", { class: "wf-buttons", testid: "workflows" }, wfs.map((w) => h("button", {
      type: "button", class: "btn btn-secondary btn-small", testid: "workflow", data: { workflow: w.name }, "aria-expanded": w.action === "timeline" ? null : "false",
      onclick: () => openWorkflow(e, w),
    }, w.label || humanize(w.name)))),
    e.el.wfForm, e.el.wfResult);
}

/** The record an update/timeline works on: the selected record, else a pinned one of that entity. */
function workflowTarget(e, w) {
  const sel = effectiveSelected(e);
  if (sel && (!w.entity || sel.entity === w.entity)) return sel;
  return (e.conv.pinned || []).find((p) => p.entity === w.entity) || null;
}

function openWorkflow(e, w) {
  const buttons = $$('[data-testid="workflow"]', e.el.workflows);
  const toggleOff = e.ui.wfOpen === w.name && w.action !== "timeline";
  e.ui.wfOpen = toggleOff ? null : w.name;
  for (const b of buttons) if (b.hasAttribute("aria-expanded")) b.setAttribute("aria-expanded", b.dataset.workflow === e.ui.wfOpen ? "true" : "false");
  e.el.wfForm.replaceChildren();
  if (toggleOff) return;
  const label = w.label || humanize(w.name);
  const error = (msg) => showWorkflowResult(e, w, null, msg);
  if (w.action === "timeline") {
    const target = workflowTarget(e, w);
    if (!target) return error(`Select a ${entityLabel(w.entity)} record first.`);
    e.ui.wfOpen = null;
    return runWorkflow(e, w, { id: target.id }, null);
  }
  let form;
  if (w.action === "search") {
    const id = nextId("wf");
    const input = h("input", { id, name: "text", type: "search", required: true, autocomplete: "off" });
    form = h("form", { class: "wf-inline", role: "search", "aria-label": label },
      h("label", { for: id }, `${label}: search ${entityLabel(w.entity)}`),
      h("div", { class: "inline-input" }, input, h("button", { type: "submit", class: "btn btn-primary" }, "Search")));
    form.addEventListener("submit", (ev) => { ev.preventDefault(); runWorkflow(e, w, { text: input.value.trim() }, form); });
  } else if (w.action === "create" || w.action === "update") {
    let target = null;
    if (w.action === "update") {
      target = workflowTarget(e, w);
      if (!target) return error(`Select a ${entityLabel(w.entity)} record first.`);
    }
    const fields = [...(w.required || [])];
    // Only the fields the workflow allows can be written (none when it lists none).
    for (const f of w.allowed || []) if (!fields.includes(f)) fields.push(f);
    if (!fields.length) fields.push("name");
    const known = target ? e.known.get(refKey(target))?.fields || {} : {};
    const prefill = w.action === "create" ? phonePrefill(fields, e.conv) : known;
    form = h("form", { class: "wf-inline", "aria-label": label },
      h("p", { class: "wf-form-title" }, w.action === "update" ? `${label}: ${e.known.get(refKey(target))?.title || target.id}` : `${label}: new ${entityLabel(w.entity)}`),
      fields.map((f) => inputFor(f, prefill[f], { required: (w.required || []).includes(f) })),
      h("div", { class: "form-actions" },
        h("button", { type: "submit", class: "btn btn-primary" }, w.action === "update" ? "Save" : "Create"),
        h("button", { type: "button", class: "btn btn-quiet", onclick: () => openWorkflow(e, w) }, "Cancel")));
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const values = {};
      for (const [k, v] of new FormData(form)) if (String(v).trim()) values[k] = String(v).trim();
      const input = { fields: values };
      if (target) input.id = target.id;
      runWorkflow(e, w, input, form);
    });
  }
  if (form) {
    e.el.wfForm.append(form);
    $("input", form)?.focus();
  }
}

async function runWorkflow(e, w, input, form) {
  const submit = form && $('button[type="submit"]', form);
  if (submit) submit.disabled = true;
  fill(e.el.wfResult, h("p", { class: "muted small" }, `${w.label || humanize(w.name)}…`));
  try {
    const res = await api("POST", `/workflows/${enc(w.name)}`, { ...input, conversation_id: e.id });
    remember(e, res.records || []);
    showWorkflowResult(e, w, res, null);
    if (w.action !== "search" && form) {
      e.ui.wfOpen = null;
      e.el.wfForm.replaceChildren();
      for (const b of $$('[data-testid="workflow"][aria-expanded]', e.el.workflows)) b.setAttribute("aria-expanded", "false");
    }
    if (w.action === "update") { e.sig.customer = null; renderCustomer(e); }
  } catch (err) {
    showWorkflowResult(e, w, null, err.detail);
  } finally {
    if (submit) submit.disabled = false;
  }
}

function showWorkflowResult(e, w, res, error) {
  const box = e.el.wfResult;
  box.replaceChildren();
  const label = w.label || humanize(w.name);
  if (error) {
    box.append(h("p", { class: "form-error" }, `${label}: ${error}`));
    return;
  }
  if (w.action === "timeline") {
    const items = res.timeline || [];
    append(box, [h("p", { class: "wf-result-title" }, `${label}: ${items.length} entr${items.length === 1 ? "y" : "ies"}`),
      items.length ? h("ol", { class: "related" }, items.map((t) => h("li", { class: "related-item", data: { kind: t.kind } },
        h("div", { class: "related-top" }, h("time", { datetime: t.at }, formatWhen(t.at)), h("span", { class: "chip" }, t.kind)),
        h("div", { class: "related-subject" }, t.subject || "(no subject)")))) : null]);
    return;
  }
  const records = res.records || [];
  const verb = { search: `${records.length} found`, create: "created", update: "saved" }[w.action] || "done";
  box.append(h("p", { class: "wf-result-title" }, `${label}: ${verb}`));
  if (w.action === "search" && !records.length) box.append(h("p", { class: "muted small" }, "No records found."));
  for (const r of records) {
    const use = h("button", { type: "button", class: "btn btn-secondary btn-small wf-select", data: { recordId: r.id, entity: r.entity }, "aria-pressed": "false", onclick: () => chooseRecord(e, r) }, "Select");
    box.append(h("div", { class: "wf-record", testid: "workflow-record" }, recordView(e, r, { actions: [use] })));
  }
  syncRecordButtons(e);
}

function buildWrapup(e) {
  const box = e.el.wrapup;
  const codes = state.panel?.wrapup_codes || [];
  const required = !!state.panel?.wrapup_required;
  const notesId = nextId("notes");
  const dispId = nextId("disposition");
  const notes = h("textarea", { id: notesId, class: "notes", testid: "notes", rows: "4", placeholder: "What was it about? What was agreed?", oninput: () => saveDraft(e) });
  let disposition;
  if (codes.length) {
    disposition = h("select", { id: dispId, testid: "disposition", required, onchange: () => saveDraft(e) },
      h("option", { value: "" }, required ? "Choose a disposition…" : "No disposition"));
    const groups = new Map();
    for (const c of codes) {
      const option = h("option", { value: c.code, data: { category: c.category ?? "" } }, c.label || c.code);
      if (!c.category) { disposition.append(option); continue; }
      if (!groups.has(c.category)) {
        const g = h("optgroup", { label: c.category });
        groups.set(c.category, g);
        disposition.append(g);
      }
      groups.get(c.category).append(option);
    }
  } else {
    disposition = h("input", { id: dispId, type: "text", testid: "disposition", required, autocomplete: "off", placeholder: "e.g. resolved", oninput: () => saveDraft(e) });
  }
  const submit = h("button", { type: "submit", class: "btn btn-primary", testid: "wrapup-submit" }, "Submit wrap-up");
  const queued = h("p", { class: "queued", testid: "wrapup-queued", role: "status", hidden: true }, "Queued — it will be sent when the connection is back.");
  const error = h("p", { class: "form-error", role: "alert", hidden: true });
  const form = h("form", { class: "wrapup-form", onsubmit: (ev) => { ev.preventDefault(); submitWrapup(e); } },
    h("div", { class: "field" }, h("label", { for: notesId }, "Notes"), notes),
    h("div", { class: "field" }, h("label", { for: dispId }, "Disposition", required ? h("span", { class: "req", "aria-hidden": "true" }, " *") : null), disposition),
    error,
    h("div", { class: "form-actions" }, submit),
    queued);
  const done = h("div", { class: "wrapup-done", testid: "wrapup-done", hidden: true });
  const memo = h("div", { class: "memo", testid: "memorialization", role: "status", "aria-live": "polite", data: { status: "waiting" } });
  e.el.wrapFor = h("span", { class: "acting-on", testid: "wrapup-for" });
  box.append(h("h3", { class: "block-title" }, "Wrap-up ", e.el.wrapFor), form, done, memo);
  Object.assign(e.el, { form, notes, disposition, submit, queued, wrapError: error, done, memo });

  const draft = local.get(draftKey(e), null);
  const q = queuedFor(e);
  const source = draft || (q && { notes: q.body.notes, code: q.body.disposition?.code });
  if (source) {
    notes.value = source.notes || "";
    disposition.value = source.code || "";
  }
}

function saveDraft(e) {
  local.set(draftKey(e), { notes: e.el.notes.value, code: e.el.disposition.value, at: Date.now() });
}

function syncWrapup(e) {
  const c = e.conv;
  const editing = e.ui.editing || !(c.wrapped_up || e.ui.sent) || hasDraft(e) || !!queuedFor(e);
  e.el.form.hidden = !editing;
  e.el.done.hidden = editing;
  if (!editing) {
    const sig = JSON.stringify([c.disposition, c.notes]);
    once(e, "done", sig, () => {
      const code = c.disposition?.code;
      const label = code ? state.panel?.wrapup_codes?.find((x) => x.code === code)?.label || code : "No disposition";
      fill(e.el.done, 
        h("p", { class: "done-line" }, h("span", { class: "ok-mark", "aria-hidden": "true" }, "✓ "), "Wrap-up sent: ", h("strong", null, label), c.disposition?.category ? ` (${c.disposition.category})` : ""),
        c.notes ? h("p", { class: "done-notes" }, c.notes) : null,
        h("button", { type: "button", class: "btn btn-quiet btn-small", onclick: () => editWrapup(e) }, "Edit wrap-up"));
    });
  }
  e.el.submit.textContent = c.wrapped_up || e.ui.sent ? "Update wrap-up" : "Submit wrap-up";
  syncWrapupStatus(e);
}

function editWrapup(e) {
  e.ui.editing = true;
  e.el.notes.value = e.conv.notes || "";
  e.el.disposition.value = e.conv.disposition?.code || "";
  syncWrapup(e);
  e.el.notes.focus();
}

/** Queued flag and memorialization status; cheap, runs on every change. */
function syncWrapupStatus(e) {
  if (!e.el) return;
  const q = queuedFor(e);
  e.el.queued.hidden = !q;
  if (q) e.el.queued.textContent = state.conn === "online" ? "Queued — sending…" : "Queued — it will be sent when the connection is back.";
  const m = e.conv.memorialization || { status: "waiting" };
  const status = m.status || "waiting";
  const canRetry = status === "failed" && !!state.session?.supervisor && m.outbox_id != null;
  const sig = JSON.stringify([status, m.last_error, m.attempts, m.activity_id, canRetry, e.conv.state, e.conv.wrapped_up, e.ui.retrying]);
  once(e, "memo", sig, () => {
    e.el.memo.dataset.status = status;
    let text = MEMO_TEXT[status] || status;
    if (status === "failed") text = `Failed: ${m.last_error || "the CRM refused the activity"}`;
    else if (status === "waiting" && e.conv.state !== "completed") text = e.conv.wrapped_up ? "Saved to CRM when the conversation ends" : MEMO_TEXT.waiting;
    else if (status === "pending" && m.attempts > 0) text = `Saving to CRM… (attempt ${m.attempts + 1})`;
    fill(e.el.memo, 
      h("span", { class: "memo-dot", "aria-hidden": "true" }),
      h("span", { class: "memo-text" }, text),
      canRetry ? h("button", { type: "button", class: "btn btn-secondary btn-small", testid: "retry", disabled: !!e.ui.retrying, onclick: () => retryMemo(e) }, e.ui.retrying ? "Retrying…" : "Retry") : null);
  });
}

async function retryMemo(e) {
  const id = e.conv.memorialization?.outbox_id;
  if (id == null) return;
  e.ui.retrying = true;
  syncWrapupStatus(e);
  try {
    await api("POST", `/outbox/${enc(id)}/replay`);
    announce("Saving to CRM again.");
    setTimeout(() => refreshConversation(e.id), 1500);
  } catch (err) {
    setCardError(e, `Retry failed: ${err.detail}`);
  } finally {
    e.ui.retrying = false;
    syncWrapupStatus(e);
  }
}

function wrapupBody(e) {
  const codeValue = e.el.disposition.value.trim();
  const body = { request_id: uuid(), notes: e.el.notes.value };
  if (codeValue) {
    const code = state.panel?.wrapup_codes?.find((x) => x.code === codeValue);
    body.disposition = { code: codeValue, category: code?.category ?? null };
  }
  if (e.conv.selected) body.selected = e.conv.selected;
  body.pinned = e.conv.pinned || [];
  return body;
}

async function submitWrapup(e) {
  e.el.wrapError.hidden = true;
  if (state.panel?.wrapup_required && !e.el.disposition.value.trim()) {
    e.el.wrapError.textContent = "Choose a disposition first.";
    e.el.wrapError.hidden = false;
    e.el.disposition.focus();
    return;
  }
  saveDraft(e);
  const item = { conversation_id: e.id, body: wrapupBody(e), queued_at: new Date().toISOString() };
  if (state.conn !== "online") {
    enqueue(item);
    announce("Offline: wrap-up queued; it will be sent on reconnect.");
    syncWrapup(e);
    return;
  }
  e.el.submit.disabled = true;
  e.el.submit.textContent = "Sending…";
  try {
    const conv = await api("POST", `/conversations/${enc(e.id)}/wrapup`, item.body);
    wrapupDone(e.id, conv);
  } catch (err) {
    if (retryable(err)) {
      enqueue(item);
      announce("No answer from the server: wrap-up queued; it will be sent on reconnect.");
    } else {
      e.el.wrapError.textContent = err.detail;
      e.el.wrapError.hidden = false;
    }
  } finally {
    e.el.submit.disabled = false;
    syncWrapup(e);
  }
}

function enqueue(item) {
  const q = loadQueue().filter((x) => x.conversation_id !== item.conversation_id);
  q.push(item);
  saveQueue(q);
}

function dequeue(requestId) {
  saveQueue(loadQueue().filter((x) => x.body.request_id !== requestId));
}

function wrapupDone(id, conv) {
  const e = state.entries.get(id);
  if (!e) return;
  clearDraft(e);
  e.ui.sent = true;
  e.ui.editing = false;
  e.el.form.reset();
  e.el.wrapError.hidden = true;
  announce(`Wrap-up sent for ${callerText(e.conv)}.`);
  mergeConversation(conv);
  syncWrapup(e);
  persistSoon();
}

/** Sends queued wrap-ups, oldest first, after every (re)connect. Each keeps its request id. */
async function flushQueue() {
  if (state.flushing) return;
  state.flushing = true;
  try {
    for (const item of loadQueue()) {
      if (state.conn !== "online" || !state.session) break;
      try {
        const conv = await api("POST", `/conversations/${enc(item.conversation_id)}/wrapup`, item.body);
        dequeue(item.body.request_id);
        wrapupDone(item.conversation_id, conv);
      } catch (err) {
        if (retryable(err)) break;
        dequeue(item.body.request_id);
        const e = state.entries.get(item.conversation_id);
        if (e) {
          e.el.notes.value = item.body.notes || "";
          e.el.disposition.value = item.body.disposition?.code || "";
          saveDraft(e);
          e.ui.editing = true;
          e.el.wrapError.textContent = `The queued wrap-up was refused: ${err.detail}`;
          e.el.wrapError.hidden = false;
          syncWrapup(e);
        }
      }
    }
  } finally {
    state.flushing = false;
    for (const e of state.entries.values()) syncWrapupStatus(e);
  }
}

// ---------------------------------------------------------------------------
// Wiring

function wireStatic() {
  $('[data-testid="signin"]').addEventListener("submit", onSignin);
  $('[data-testid="signout"]').addEventListener("click", onSignout);
  window.addEventListener("online", () => { if (state.session && !state.ws) { state.attempt = 0; connect(); } });
  // The browser lost its network: the socket is as good as gone (it may take minutes to notice).
  window.addEventListener("offline", () => {
    const ws = state.ws;
    if (!ws) return;
    state.ws = null;
    try { ws.close(); } catch { /* ignore */ }
    setConn("offline");
    scheduleReconnect();
  });
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible" && state.session && !state.ws) { state.attempt = 0; connect(); }
  });
  window.matchMedia("(min-width: 760px)").addEventListener("change", updateChrome);
  wireAttention();
  setInterval(() => tickClock(state.entries.get(state.selectedId)), 1000);
  // A queued wrap-up whose send failed while the stream stayed up: try again now and then.
  setInterval(() => { if (state.conn === "online" && loadQueueSafe().length) flushQueue(); }, 15000);
  window.addEventListener("storage", (ev) => {
    // Another tab of the same agent sent a queued wrap-up or changed a draft: show it.
    if (ev.key && state.agent && ev.key.startsWith(`cxbridge:${state.agent}:`)) for (const e of state.entries.values()) syncWrapupStatus(e);
  });
}

/** The agent's activity on a card (it keeps the card: a pointer moving over it counts, so a
 * click on its way never lands on a card that replaced it), the offer bar, Alt+N, Recent
 * and "Clear completed". */
function wireAttention() {
  const cards = $("#cards");
  const touch = (ev) => {
    const id = ev.target?.closest?.(".card")?.dataset.conversationId;
    const e = id && state.entries.get(id);
    if (e) e.touchedAt = Date.now();
  };
  for (const type of ["pointerdown", "keydown", "input", "focusin", "wheel"]) cards.addEventListener(type, touch, { capture: true, passive: true });
  let lastMove = 0;
  cards.addEventListener("pointermove", (ev) => {
    if (ev.timeStamp - lastMove < 250) return;
    lastMove = ev.timeStamp;
    touch(ev);
  }, { capture: true, passive: true });
  $('[data-testid="offer-switch"]').addEventListener("click", () => {
    const id = $('[data-testid="offer-bar"]').dataset.conversationId;
    if (id) showConversation(id);
  });
  document.addEventListener("keydown", (ev) => {
    if (!ev.altKey || ev.ctrlKey || ev.metaKey || ev.repeat || ev.isComposing || (ev.key.toLowerCase() !== "n" && ev.code !== "KeyN")) return;
    // macOS types ñ/õ with Option+N (a dead key): in a text field that is typing, not the shortcut.
    if (ev.key === "Dead" && ev.target?.matches?.("input, textarea, [contenteditable]")) return;
    const next = newestUnseen();
    if (!next) return;
    ev.preventDefault();
    showConversation(next.id);
  });
  $('[data-testid="clear-completed"]').addEventListener("click", clearCompleted);
  setInterval(sweepRecent, 1000);
}

// api.js reports a refused request through a hook: what checks the session sits above it.
whenSessionLost(checkSession);

boot();
