// The agent's WebSocket stream: connecting, reconnecting with backoff, the snapshot and the frames.
import { $, enc } from "./dom.js";
import { memoStatus, state } from "./state.js";
import { API, sessionLost } from "./api.js";
import { accept, refreshConversation } from "./conversations.js";
import { flushQueue, syncWrapupStatus } from "./wrapup.js";

const RECONNECT_BASE_MS = 500;
const RECONNECT_MAX_MS = 5000;
const CONNECTION_TEXT = { online: "Online", offline: "Offline — reconnecting…", connecting: "Connecting…" };

export function setConn(conn) {
  state.conn = conn;
  const el = $('[data-testid="connection"]');
  if (el.dataset.state !== conn) {
    el.dataset.state = conn;
    el.textContent = CONNECTION_TEXT[conn];
  }
  for (const e of state.entries.values()) syncWrapupStatus(e);
}

export function connect() {
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

export function closeStream() {
  clearTimeout(state.reconnectTimer);
  state.reconnectTimer = null;
  const ws = state.ws;
  state.ws = null;
  if (ws) try { ws.close(1000, "bye"); } catch { /* ignore */ }
  setConn("connecting");
}

export function scheduleReconnect() {
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
