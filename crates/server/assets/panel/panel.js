// cxbridge agent panel: sign-in, live conversations over the agent WebSocket, screen pop,
// customer card, workflows and wrap-up. Plain ES module, no dependencies, no build step.
// The page runs under a strict CSP: no inline scripts or styles, no eval, so everything
// below builds DOM nodes and sets classes; nothing is parsed from HTML strings.

import { $, enc, sleep } from "./dom.js";
import { key, loadQueueSafe, local, memoStatus, session, state } from "./state.js";
import { API, api, sessionLost, whenSessionLost } from "./api.js";
import { startCif } from "./crm.js";
import { clearCompleted, newestUnseen, select, selectFallback, showConversation, sweepRecent, tickClock, updateChrome } from "./tabs.js";
import { accept, addEntry, initConversations, refreshConversation, refreshRelated, renderEntry } from "./conversations.js";
import { flushQueue, syncWrapupStatus } from "./wrapup.js";
import { buildCard, renderCard } from "./card.js";
import { initAlerts } from "./alerts.js";

const RECONNECT_BASE_MS = 500;
const RECONNECT_MAX_MS = 5000;

const CONNECTION_TEXT = { online: "Online", offline: "Offline — reconnecting…", connecting: "Connecting…" };

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

// Lower modules call upwards through two hooks, so that no modules import each other in a circle:
// a refused request asks session.js to check the session; conversations.js draws with card.js.
whenSessionLost(checkSession);
initConversations({ buildCard, renderCard });

boot();
