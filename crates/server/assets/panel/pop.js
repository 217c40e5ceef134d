// The screen pop block of a card: what the pop's action shows, and the search and create forms.
import { $, announce, enc, h, humanize, nextId, once } from "./dom.js";
import { entityLabel, remember, sameRef, state } from "./state.js";
import { api } from "./api.js";
import { mergeConversation, refreshRelated, renderEntry } from "./conversations.js";
import { chooseRecord, pinButton, recordView, syncRecordButtons } from "./customer.js";

const SKIP_REASONS = {
  anonymous: "The caller's number is withheld.",
  own_number: "The call comes from one of our own numbers.",
  internal: "Internal call.",
  invalid: "The caller's number is not a valid number.",
  crm_error: "The CRM did not answer in time; search by hand.",
};

export function renderPop(e) {
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

function searchWorkflow(entity) {
  const wfs = state.panel?.workflows || [];
  return wfs.find((w) => w.action === "search" && (!entity || w.entity === entity)) || null;
}

function defaultCreateEntity() {
  const entities = state.panel?.entities || [];
  return entities.find((x) => x.create_fields?.length) || null;
}

export function phonePrefill(fields, conv) {
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

export function inputFor(field, value, { required = false } = {}) {
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
