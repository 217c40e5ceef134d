// The Workflows block of a card: a button per configured workflow, its form and its result.
import { $, $$, append, enc, fill, formatWhen, h, humanize, nextId } from "./dom.js";
import { effectiveSelected, entityLabel, refKey, remember, state } from "./state.js";
import { api } from "./api.js";
import { chooseRecord, recordView, renderCustomer, syncRecordButtons } from "./customer.js";
import { inputFor, phonePrefill } from "./pop.js";

export function buildWorkflows(e) {
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
