// Signing in and out: the boot, sign-in and app views, loading the panel, what this browser kept for the agent.
import { $, sleep } from "./dom.js";
import { key, local, session, state } from "./state.js";
import { API, api } from "./api.js";
import { startCif } from "./crm.js";
import { select, selectFallback, showConversation, updateChrome } from "./tabs.js";
import { addEntry, refreshRelated, renderEntry } from "./conversations.js";
import { closeStream, connect } from "./stream.js";
import { initAlerts } from "./alerts.js";

export function showView(name) {
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

export function showSignin(message) {
  showView("signin");
  const err = $('[data-testid="signin-error"]');
  err.textContent = message || "";
  err.hidden = !message;
  const agentInput = $("#signin-agent");
  if (!agentInput.value && state.agent) agentInput.value = state.agent;
  (agentInput.value ? $("#signin-password") : agentInput).focus();
}

export async function onSignin(ev) {
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

export async function onSignout() {
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
export function checkSession() {
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

export async function start(s) {
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
