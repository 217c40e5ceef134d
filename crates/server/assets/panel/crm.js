// The CRM around the panel: dial links, the click-to-dial log, and the Dynamics CIF adapter through cif.js.
import { $, announce, enc, h, timeFmt } from "./dom.js";
import { state } from "./state.js";

function dialHref(number) {
  const tpl = state.panel?.dial_url;
  if (!tpl || !number) return null;
  const href = tpl.includes("{number}") ? tpl.replaceAll("{number}", enc(number).replace(/%2B/gi, "+")) : tpl + enc(number);
  try {
    const u = new URL(href, location.href);
    if (["javascript:", "data:", "vbscript:", "file:"].includes(u.protocol)) return null;
  } catch {
    return null;
  }
  return href;
}

export function looksLikePhone(value) {
  const v = String(value || "").trim();
  return /^\+?[0-9][0-9 ().\-/]{5,}$/.test(v) && v.replace(/\D/g, "").length >= 6;
}

/** A phone number: a dial link when a dial template is configured, else plain text. */
export function phone(number, props = {}) {
  const href = dialHref(number);
  if (!href) return h("span", { ...props, class: `phone ${props.class || ""}`.trim() }, number);
  const external = /^https?:/i.test(href);
  return h("a", {
    ...props,
    class: `phone ${props.class || ""}`.trim(),
    href,
    target: external ? "_blank" : null,
    rel: external ? "noopener noreferrer" : null,
    title: `Call ${number}`,
    onclick: () => logDial(number, "link"),
  }, number);
}

// ---------------------------------------------------------------------------
// CIF (Dynamics 365 Channel Integration Framework) through cif.js, when present

export async function startCif() {
  if (state.cifState !== "idle") return;
  state.cifState = "loading";
  try {
    const mod = await import("./cif.js");
    state.adapter = (await mod.connectCif(state.panel?.dynamics ?? null)) || null;
  } catch (err) {
    console.info("cxbridge: running without CIF", err?.message || err);
    state.adapter = null;
  }
  state.cifState = "done";
  if (state.adapter) {
    document.documentElement.classList.add("in-cif");
    try {
      state.adapter.onClickToDial((number) => logDial(number, "crm"));
    } catch (err) {
      console.warn("cxbridge: click-to-dial unavailable", err);
    }
  }
  const pending = state.cifQueue.splice(0);
  if (state.adapter) for (const id of pending) { const e = state.entries.get(id); if (e) cifPop(e); }
}

export function cifPop(e) {
  if (state.cifState !== "done") { state.cifQueue.push(e.id); return; }
  if (!state.adapter) return;
  try {
    Promise.resolve(state.adapter.pop({ conversation: e.conv, pop: e.pop }, state.panel)).catch((err) => console.warn("cxbridge: CIF pop", err));
  } catch (err) {
    console.warn("cxbridge: CIF pop", err);
  }
}

export function cifEnd(e) {
  if (!state.adapter) return;
  try {
    Promise.resolve(state.adapter.end({ conversation: e.conv, pop: e.pop })).catch((err) => console.warn("cxbridge: CIF end", err));
  } catch (err) {
    console.warn("cxbridge: CIF end", err);
  }
}

function logDial(number, origin) {
  const n = String(number ?? "").trim();
  if (!n) return;
  const log = $('[data-testid="dial-log"]');
  const list = $("#dial-entries");
  const href = origin === "crm" ? dialHref(n) : null;
  list.prepend(h("li", { class: "dial-entry", testid: "dial-entry", data: { number: n } },
    h("time", { datetime: new Date().toISOString() }, timeFmt.format(new Date())),
    h("span", { class: "dial-number" }, n),
    h("span", { class: "muted small" }, origin === "crm" ? "from the CRM" : "dialled"),
    href ? h("a", { class: "btn btn-secondary btn-small", href, target: /^https?:/i.test(href) ? "_blank" : null, rel: "noopener noreferrer" }, "Call") : null));
  while (list.children.length > 20) list.lastElementChild.remove();
  log.hidden = false;
  announce(`Click-to-dial: ${n}`);
}
