// The Wrap-up block of a card: notes, disposition, submit (queued while offline), the CRM save status.
import { announce, enc, fill, h, nextId, once, uuid } from "./dom.js";
import { callerText, clearDraft, draftKey, hasDraft, loadQueue, local, MEMO_TEXT, queuedFor, saveQueue, state } from "./state.js";
import { api, retryable } from "./api.js";
import { persistSoon, setCardError } from "./tabs.js";
import { mergeConversation, refreshConversation } from "./conversations.js";

export function buildWrapup(e) {
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

export function syncWrapup(e) {
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
export function syncWrapupStatus(e) {
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
export async function flushQueue() {
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
