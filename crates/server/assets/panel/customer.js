// The customer card: a record (fields, pin toggle), choosing and pinning records, the Customer block.
import { $$, announce, enc, fill, formatWhen, h, humanize, once } from "./dom.js";
import { effectiveSelected, entityLabel, isPinned, refKey, remember, sameRef } from "./state.js";
import { api } from "./api.js";
import { looksLikePhone, phone } from "./crm.js";
import { setCardError } from "./tabs.js";
import { mergeConversation, refreshRelated } from "./conversations.js";

/** A record: title, entity, display fields in order, and pin. */
export function recordView(e, r, { testid = null, actions = [] } = {}) {
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
export function pinButton(e, r) {
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
export function syncRecordButtons(e) {
  for (const b of $$(".pin-toggle", e.card)) syncPinButton(e, b);
  const sel = e.conv.selected;
  for (const b of $$('[data-testid="candidate"], [data-testid="search-result"], .wf-select', e.card)) {
    const on = !!sel && sel.entity === b.dataset.entity && sel.id === b.dataset.recordId;
    b.setAttribute("aria-pressed", on ? "true" : "false");
    b.classList.toggle("is-selected", on);
  }
}

export async function chooseRecord(e, r) {
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

// ---------------------------------------------------------------------------
// Customer card: the record the activity is about, pinned records, related interactions

function shownAbove(e, ref) {
  return $$(".pin-toggle", e.el.pop).some((b) => b.dataset.pinEntity === ref.entity && b.dataset.pinId === ref.id);
}

export function renderCustomer(e) {
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
