// The panel's state: the one state object, what this browser keeps per agent, what a conversation's data says.
import { humanize } from "./dom.js";

export const KEEP_IDS = 400;
export const STATE_WORDS = { offered: "Ringing", connected: "Connected", ended: "Ended", completed: "Completed" };
export const MEMO_TEXT = {
  waiting: "Saved to CRM once the conversation is complete",
  pending: "Saving to CRM…",
  written: "Saved to CRM",
  failed: "Failed",
};

// ---------------------------------------------------------------------------
// Storage (localStorage / sessionStorage may be blocked in a third-party iframe: fall back to memory)

function makeStore(kind) {
  const memory = new Map();
  let backend = null;
  try {
    backend = window[kind];
    const probe = "cxbridge:probe";
    backend.setItem(probe, "1");
    backend.removeItem(probe);
  } catch {
    backend = null;
  }
  return {
    get(key, fallback) {
      try {
        const raw = backend ? backend.getItem(key) : memory.get(key);
        return raw == null ? fallback : JSON.parse(raw);
      } catch {
        return fallback;
      }
    },
    set(key, value) {
      const raw = JSON.stringify(value);
      try {
        if (backend) backend.setItem(key, raw);
        else memory.set(key, raw);
      } catch {
        memory.set(key, raw);
      }
    },
    del(key) {
      try { backend?.removeItem(key); } catch { /* ignore */ }
      memory.delete(key);
    },
  };
}

export const local = makeStore("localStorage");
export const session = makeStore("sessionStorage");
export const key = (name) => `cxbridge:${state.agent}:${name}`;

// ---------------------------------------------------------------------------
// State

export const state = {
  session: null,
  panel: null,
  agent: null,
  entries: new Map(), // conversation id → entry
  selectedId: null,
  ws: null,
  conn: "connecting",
  attempt: 0,
  reconnectTimer: null,
  firstSnapshot: true,
  unseen: new Set(), // offers announced but not yet looked at (the card stayed on another)
  popped: new Set(), // ids already popped (sessionStorage): no second pop on a snapshot replay
  dismissed: new Set(), // ids the agent dismissed (localStorage): late frames do not bring them back
  adapter: null,
  cifState: "idle", // idle → loading → done
  cifQueue: [],
  flushing: false,
  persistTimer: null,
};

// ---------------------------------------------------------------------------
// Conversation data helpers

export const refKey = (r) => `${r.entity}/${r.id}`;
export const sameRef = (a, b) => !!a && !!b && a.entity === b.entity && a.id === b.id;
export const memoStatus = (conv) => conv.memorialization?.status || "waiting";
export const callerText = (conv) => conv.customer_number || "Unknown caller";
export const entityLabel = (name) => state.panel?.entities?.find((x) => x.name === name)?.label || humanize(name || "record");
export const isDone = (conv) => conv.state === "completed";
export const takenByOther = (e) => !!e.conv.agent && e.conv.agent !== state.agent;

export function remember(e, records) {
  for (const r of records) if (r?.entity && r?.id) {
    const old = e.known.get(refKey(r));
    e.known.set(refKey(r), old ? { ...r, fields: r.fields || old.fields, grant: r.grant || old.grant } : r);
  }
}

export function rememberPop(e) {
  const p = e.pop;
  remember(e, [p.record, p.matched, ...(p.records || []), ...(e.conv.identification?.candidates || [])]);
}

/** The record the activity will be about: the agent's choice, else the opened record. */
export function effectiveSelected(e) {
  if (e.conv.selected) return e.conv.selected;
  if (e.pop.action === "open" && e.pop.record) return { entity: e.pop.record.entity, id: e.pop.record.id };
  return null;
}

export function entryTitle(e) {
  const sel = effectiveSelected(e);
  const rec = sel && e.known.get(refKey(sel));
  return rec?.title || e.pop.record?.title || null;
}

export function isPinned(e, ref) {
  return (e.conv.pinned || []).some((p) => sameRef(p, ref));
}

// ---------------------------------------------------------------------------
// Kept for the wrap-up (wrapup.js): drafts in localStorage, the queue of wrap-ups to send

export const draftKey = (e) => key(`draft:${e.id}`);
export const hasDraft = (e) => !!local.get(draftKey(e), null);

export function clearDraft(e) {
  local.del(draftKey(e));
}

export function loadQueue() { return local.get(key("wrapup-queue"), []); }
export const loadQueueSafe = () => (state.agent ? loadQueue() : []);
export function saveQueue(q) { local.set(key("wrapup-queue"), q); }
export const queuedFor = (e) => loadQueue().find((x) => x.conversation_id === e.id) || null;
