// A conversation's card: its layout (screen pop, customer, wrap-up, workflows), its head, drawing it on a change.
import { announce, append, enc, fill, h, humanize, once } from "./dom.js";
import { callerText, entryTitle, isDone, rememberPop, STATE_WORDS, takenByOther } from "./state.js";
import { api } from "./api.js";
import { phone } from "./crm.js";
import { dismiss, renderTab, setCardError, tickClock, updateChrome } from "./tabs.js";
import { mergeConversation } from "./conversations.js";
import { renderCustomer, syncRecordButtons } from "./customer.js";
import { renderPop } from "./pop.js";
import { buildWorkflows } from "./workflows.js";
import { buildWrapup, syncWrapup } from "./wrapup.js";

export function buildCard(e) {
  const s = (e.el = {});
  s.head = h("header", { class: "card-head" });
  s.error = h("div", { class: "card-error", role: "alert", hidden: true });
  s.pop = h("section", { class: "block block-pop", "aria-label": "Screen pop" });
  s.customer = h("section", { class: "block block-customer", "aria-label": "Customer card" });
  s.workflows = h("section", { class: "block block-workflows", "aria-label": "Workflows" });
  s.wrapup = h("section", { class: "block block-wrapup", "aria-label": "Wrap-up" });
  const main = h("div", { class: "card-col card-col-main" }, s.pop, s.customer);
  const side = h("div", { class: "card-col card-col-side" }, s.wrapup, s.workflows);
  append(e.card, [s.head, s.error, h("div", { class: "card-body" }, main, side)]);
  buildWrapup(e);
  buildWorkflows(e);
}

/** Draws a conversation's tab and card, each part only when it changed (`force`: all of them). */
export function renderCard(e, force = false) {
  if (force) e.sig = {};
  rememberPop(e);
  const c = e.conv;
  e.card.dataset.state = c.state;
  e.card.dataset.popAction = e.pop.action;
  e.card.classList.toggle("is-other", takenByOther(e));
  renderTab(e);
  renderHead(e);
  renderPop(e);
  renderCustomer(e);
  syncWrapup(e);
  syncRecordButtons(e);
  updateChrome();
}

function renderHead(e) {
  const c = e.conv;
  const title = entryTitle(e);
  const sig = JSON.stringify([title, c.state, c.outcome, c.customer_number, c.channel, c.queue, c.direction, c.agent, c.duration, c.timed_out, c.campaign, c.transfers?.length]);
  once(e, "head", sig, () => {
    const canDismiss = isDone(c) || takenByOther(e);
    // A PBX may never send the end of a call: the agent closes it by hand (the hub records who).
    const canClose = (c.state === "offered" || c.state === "connected") && !takenByOther(e);
    const others = takenByOther(e) ? h("p", { class: "note note-warn" }, isDone(c) ? `Handled by ${c.agent}.` : `Now with ${c.agent}.`) : null;
    fill(e.el.head, 
      h("div", { class: "head-top" },
        h("div", { class: "who" },
          h("h2", { class: "who-title" }, title || (c.customer_number ? "Unknown customer" : "Unknown caller")),
          c.customer_number ? phone(c.customer_number, { testid: "caller", class: "who-number" }) : h("span", { class: "who-number muted", testid: "caller" }, "")),
        h("div", { class: "head-side" },
          h("span", { class: `badge badge-${c.state}`, testid: "call-state", data: { state: c.state } }, STATE_WORDS[c.state] || c.state),
          canClose ? h("button", { type: "button", class: "btn btn-quiet btn-small", testid: "close-conversation", title: "The call's end never arrived: close it here", "aria-label": `Close conversation with ${callerText(c)}`, onclick: () => closeConversation(e) }, "Close") : null,
          canDismiss ? h("button", { type: "button", class: "btn btn-quiet btn-small", testid: "dismiss", "aria-label": `Dismiss conversation with ${callerText(c)}`, onclick: () => dismiss(e) }, "Dismiss") : null)),
      h("ul", { class: "meta", "aria-label": "Conversation" },
        h("li", null, h("span", { class: "sr-only" }, "Channel: "), h("span", { class: "cap", testid: "channel" }, c.channel)),
        h("li", null, h("span", { class: "sr-only" }, "Direction: "), h("span", { class: "cap", testid: "direction" }, c.direction)),
        h("li", null, h("span", { class: "meta-label" }, "Queue "), h("span", { testid: "queue" }, c.queue || "—")),
        c.campaign ? h("li", null, h("span", { class: "meta-label" }, "Campaign "), c.campaign) : null,
        h("li", { class: "elapsed", "aria-label": "Duration" }, ""),
        c.outcome && c.outcome !== "answered" ? h("li", { class: `outcome outcome-${c.outcome}` }, humanize(c.outcome)) : null,
        c.transfers?.length ? h("li", null, `${c.transfers.length} transfer${c.transfers.length > 1 ? "s" : ""}`) : null,
        c.timed_out ? h("li", { class: "muted" }, "closed by timeout") : null),
      others,
    );
    // The blocks that write say whom they write about (the card may be one of several).
    const about = `· ${title || callerText(c)}`;
    if (e.el.wrapFor) e.el.wrapFor.textContent = about;
    if (e.el.workflowsFor) e.el.workflowsFor.textContent = about;
    tickClock(e);
  });
}

/** Ends this card's conversation on the hub (its end never came); names the id explicitly. */
async function closeConversation(e) {
  const id = e.id;
  try {
    const conv = await api("POST", `/conversations/${enc(id)}/close`, {});
    mergeConversation(conv);
    announce(`Conversation with ${callerText(conv)} closed.`);
  } catch (err) {
    setCardError(e, err.detail);
  }
}
