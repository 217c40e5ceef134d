// The agent panel's entry module: hands the modules their hooks, wires the page's controls, boots.

// Sign-in, live conversations over the agent WebSocket, screen pop, customer card, workflows and
// wrap-up, in plain ES modules: no dependencies, no build step. The page runs under a strict
// CSP: no inline scripts or styles, no eval, so every module builds DOM nodes (dom.js's h())
// and sets classes; nothing is parsed from HTML strings.

import { $, sleep } from "./dom.js";
import { loadQueueSafe, state } from "./state.js";
import { api, whenSessionLost } from "./api.js";
import { clearCompleted, newestUnseen, showConversation, sweepRecent, tickClock, updateChrome } from "./tabs.js";
import { initConversations } from "./conversations.js";
import { flushQueue, syncWrapupStatus } from "./wrapup.js";
import { buildCard, renderCard } from "./card.js";
import { connect, scheduleReconnect, setConn } from "./stream.js";
import { checkSession, onSignin, onSignout, showSignin, showView, start } from "./session.js";

// Lower modules call upwards through two hooks, so that no modules import each other in a circle:
// a refused request asks session.js to check the session; conversations.js draws with card.js.
whenSessionLost(checkSession);
initConversations({ buildCard, renderCard });

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

boot();
