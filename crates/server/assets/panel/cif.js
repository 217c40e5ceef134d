// Dynamics 365 Channel Integration Framework (CIF) adapter of the agent panel.
//
// connectCif(dynamics, {timeoutMs}) → adapter | null. The adapter opens the caller's record in
// Dynamics when a pop arrives (searchAndOpenRecords / createRecord / renderSearchPage), on
// CIF 2.0 first shows the incoming-call toast (notifyEvent) and opens a session per
// conversation (createSession), and turns Dynamics' click-to-act into click-to-dial.
// Nothing here throws: failures are logged with console.warn and the panel goes on.
// The calls and their argument shapes follow Microsoft's CIF documentation; see the notes at
// the top of crates/server/tests/browser/fake-cif.js and docs/crm/dynamics-panel.md.

const LOG = "cxbridge cif:";
const LIBRARY_ID = "CIFMainLibrary";
// Unique names of the CIF 2.0 templates the administrator creates (docs/crm/dynamics-panel.md).
const NOTIFICATION_TEMPLATE = "cxb_incoming_call";
const SESSION_TEMPLATE = "cxb_call_session";
const STORE_KEY = "cxbridge.cif.conversations";
const STORE_MAX = 200;

const GUID = /^\{?([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\}?$/i;
const NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

// CIFInitDone may fire before connectCif is called: remember it from the moment this module
// is loaded.
let initSeen = false;
window.addEventListener("CIFInitDone", () => { initSeen = true; });

function warn(...args) {
  try { console.warn(LOG, ...args); } catch { /* no console */ }
}

function errorText(e) {
  if (e == null) return String(e);
  if (typeof e === "string") return e;
  return e.message || e.errorMsg || (() => { try { return JSON.stringify(e); } catch { return String(e); } })();
}

function framework() {
  const m = window.Microsoft;
  return m && m.CIFramework ? m.CIFramework : null;
}

// CIF answers are JSON strings (sometimes objects): parse either, null when neither.
function parse(value) {
  if (value == null) return null;
  if (typeof value === "object") return value;
  try { return JSON.parse(String(value)); } catch { return null; }
}

function loadLibrary(url, crmUrl) {
  return new Promise((resolve) => {
    const existing = document.querySelector(`script[data-cifid="${LIBRARY_ID}"]`);
    if (existing) { resolve(true); return; }
    const s = document.createElement("script");
    s.src = url;
    s.async = true;
    if (crmUrl) s.setAttribute("data-crmurl", crmUrl);
    s.setAttribute("data-cifid", LIBRARY_ID);
    s.addEventListener("load", () => resolve(true));
    s.addEventListener("error", () => resolve(false));
    (document.head || document.documentElement).appendChild(s);
  });
}

// Resolves true once CIF is ready (CIFInitDone, now or earlier), false at the deadline.
// probe: the library was already there before us, so the event may have fired unseen; a
// getEnvironment() that answers means CIF is ready.
function waitForInit(deadline, probe) {
  return new Promise((resolve) => {
    let done = false;
    let timer = null;
    const finish = (ok) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      window.removeEventListener("CIFInitDone", onInit);
      resolve(ok);
    };
    const onInit = () => finish(true);
    window.addEventListener("CIFInitDone", onInit);
    timer = setTimeout(() => finish(false), Math.max(0, deadline - Date.now()));
    if (initSeen) { finish(true); return; }
    if (probe) {
      const c = framework();
      if (c && typeof c.getEnvironment === "function") {
        try { Promise.resolve(c.getEnvironment()).then(() => finish(true), () => {}); } catch { /* not ready */ }
      }
    }
  });
}

/**
 * Resolves to an adapter when the CIF library is present and CIFInitDone fired (or had fired),
 * else null after timeoutMs. Loads dynamics.cif_library_url first when the library is absent.
 */
export async function connectCif(dynamics, { timeoutMs = 3000 } = {}) {
  try {
    const deadline = Date.now() + Math.max(0, Number(timeoutMs) || 0);
    const present = framework() != null;
    if (!present) {
      if (!dynamics || !dynamics.cif_library_url) return null; // standalone panel
      const loaded = await Promise.race([
        loadLibrary(dynamics.cif_library_url, dynamics.crm_url),
        new Promise((r) => setTimeout(() => r(false), Math.max(0, deadline - Date.now()))),
      ]);
      if (!loaded || framework() == null) {
        warn(`the CIF library did not load from ${dynamics.cif_library_url}; the panel works without Dynamics`);
        return null;
      }
    }
    const ready = await waitForInit(deadline, present);
    if (!ready || framework() == null) {
      if (dynamics) warn("CIFInitDone did not come in time (not inside Dynamics 365?); the panel works without Dynamics");
      return null;
    }
    const configured = dynamics && (dynamics.cif_version === 1 || dynamics.cif_version === 2) ? dynamics.cif_version : null;
    const version = configured ?? (typeof framework().createSession === "function" ? 2 : 1);
    return makeAdapter(dynamics || {}, version);
  } catch (e) {
    warn("connect failed:", errorText(e));
    return null;
  }
}

function makeAdapter(dynamics, version) {
  const entityMap = dynamics.entity_map || {};
  const notificationTemplate = dynamics.notification_template || NOTIFICATION_TEMPLATE;
  const sessionTemplate = dynamics.session_template || SESSION_TEMPLATE;

  // Per conversation id: {sig, sessionId, ended} (kept in sessionStorage, so a reload of the
  // panel does not pop Dynamics again) and, in memory only, {session: Promise, token}.
  const saved = loadStore();
  const live = new Map();

  function stateOf(id) {
    let st = live.get(id);
    if (!st) {
      const s = saved[id] || {};
      st = { sig: s.sig ?? null, sessionId: s.sessionId ?? null, ended: !!s.ended, session: null, token: null };
      if (st.sessionId) st.session = Promise.resolve(true);
      live.set(id, st);
    }
    return st;
  }

  function persist(id) {
    const st = live.get(id);
    if (!st) return;
    delete saved[id];
    saved[id] = { sig: st.sig, sessionId: st.sessionId, ended: st.ended };
    const ids = Object.keys(saved);
    for (const old of ids.slice(0, Math.max(0, ids.length - STORE_MAX))) delete saved[old];
    try { sessionStorage.setItem(STORE_KEY, JSON.stringify(saved)); } catch { /* storage off */ }
  }

  function logical(entity) {
    const name = entityMap[entity] || entity;
    return typeof name === "string" && NAME.test(name) ? name : null;
  }

  // The primary key column: the entity's id_field when the panel view has one, else
  // "<logical name>id" (contactid, accountid, leadid, …), Dataverse's convention.
  function idField(entity, name, panelView) {
    const e = panelView && Array.isArray(panelView.entities) ? panelView.entities.find((x) => x && x.name === entity) : null;
    const f = e && e.id_field;
    return typeof f === "string" && NAME.test(f) ? f : `${name}id`;
  }

  async function openRecord(c, record, panelView) {
    const name = logical(record.entity);
    if (!name || record.id == null || record.id === "") { warn("cannot open a record without entity and id:", record); return; }
    const pk = idField(record.entity, name, panelView);
    await c.searchAndOpenRecords(name, `?$select=${pk}&$filter=${pk} eq ${literal(record.id)}`, false);
  }

  async function showInDynamics(c, conv, pop, panelView) {
    switch (pop.action) {
      case "open": {
        const record = pop.record || pop.matched;
        if (record) await openRecord(c, record, panelView);
        return;
      }
      case "list": {
        const records = (pop.records || []).filter((r) => r && r.entity && r.id != null);
        if (!records.length) return;
        // One search page at a time: the candidates of the first candidate's entity.
        const entity = records[0].entity;
        const name = logical(entity);
        if (!name) { warn("unknown entity name:", entity); return; }
        const pk = idField(entity, name, panelView);
        const ids = records.filter((r) => r.entity === entity).map((r) => `${pk} eq ${literal(r.id)}`);
        const term = searchTerm(conv.customer_number);
        // $search makes searchOnly=false open the search page (prefilled) rather than one record.
        let q = `?$select=${pk}&$filter=${ids.join(" or ")}`;
        if (term) q += `&$search=${term}`;
        await c.searchAndOpenRecords(name, q, false);
        return;
      }
      case "create": {
        const name = logical(pop.entity);
        if (!name) { warn("unknown entity name:", pop.entity); return; }
        // createRecord saves the record at once (it does not open a form); then open it.
        const created = parse(await c.createRecord(name, JSON.stringify(pop.prefill || {})));
        const id = created && (created.id || created[`${name}id`]);
        if (id) await openRecord(c, { entity: pop.entity, id: String(id) }, panelView);
        return;
      }
      case "search": {
        const name = logical(pop.entity);
        if (!name) { warn("unknown entity name:", pop.entity); return; }
        await c.renderSearchPage(name, String(pop.query ?? conv.customer_number ?? ""));
        return;
      }
      default:
        return; // nothing, unidentified: no record to show in Dynamics
    }
  }

  // CIF 2.0: the toast, then a session for the conversation. Resolves false when the agent
  // declined the toast or the conversation ended meanwhile (then nothing opens in Dynamics).
  function ensureSession(c, conv, pop, st) {
    if (st.session) return st.session;
    st.session = (async () => {
      const params = {
        customerName: recordTitle(pop) || conv.customer_number || "",
        customerNumber: conv.customer_number || "",
        queue: conv.queue || "",
        channel: conv.channel || "",
        conversationId: conv.id,
      };
      if (conv.state === "offered" && conv.direction !== "outbound" && typeof c.notifyEvent === "function") {
        st.token = `cxbridge-${conv.id}-${Date.now()}`;
        let answer = null;
        try {
          answer = parse(await c.notifyEvent({ templateName: notificationTemplate, templateParameters: params, cancellationToken: st.token }));
        } catch (e) {
          warn(`notifyEvent (template ${notificationTemplate}) failed:`, errorText(e));
        }
        st.token = null;
        const a = answer && (answer.value && typeof answer.value === "object" ? answer.value : answer);
        if (a && a.actionName === "Reject" && a.responseReason === "DeclinedByAgent") return false;
        if (st.ended) return false;
      }
      if (typeof c.canCreateSession === "function") {
        try {
          if ((await c.canCreateSession()) === false) { warn("canCreateSession said no: no Dynamics session for", conv.id); return true; }
        } catch (e) { warn("canCreateSession failed:", errorText(e)); }
      }
      if (typeof c.createSession === "function") {
        try {
          const id = await c.createSession({ templateName: sessionTemplate, templateParameters: params });
          if (id != null && id !== "") { st.sessionId = String(id); persist(conv.id); }
        } catch (e) {
          warn(`createSession (template ${sessionTemplate}) failed:`, errorText(e));
        }
      }
      return !st.ended;
    })();
    return st.session;
  }

  return {
    version,

    async pop(agentConversation, panelView) {
      try {
        const conv = agentConversation && agentConversation.conversation;
        const pop = agentConversation && agentConversation.pop;
        if (!conv || !conv.id || !pop || pop.action === "disabled") return;
        if (conv.state === "ended" || conv.state === "completed") return;
        const c = framework();
        if (!c) return;
        const st = stateOf(conv.id);
        if (st.ended) return;
        const sig = signature(pop);
        if (st.sig === sig) return; // already shown (a repeated frame, a snapshot after reconnect)
        st.sig = sig;
        persist(conv.id);
        if (version === 2 && !(await ensureSession(c, conv, pop, st))) return;
        await showInDynamics(c, conv, pop, panelView);
      } catch (e) {
        warn("pop failed:", errorText(e));
      }
    },

    async end(agentConversation) {
      try {
        const id = agentConversation && agentConversation.conversation ? agentConversation.conversation.id : agentConversation && agentConversation.id;
        if (!id) return;
        const c = framework();
        const st = stateOf(id);
        if (st.ended) return;
        st.ended = true;
        persist(id);
        if (!c) return;
        if (st.token && typeof c.cancelEvent === "function") {
          const token = st.token;
          st.token = null;
          try { await c.cancelEvent(token); } catch (e) { warn("cancelEvent failed:", errorText(e)); }
        }
        // (a toast the agent never answered could keep it pending: wait 5 s at most)
        if (st.session) await Promise.race([st.session.catch(() => {}), new Promise((r) => setTimeout(r, 5000))]);
        if (st.sessionId) {
          // closeSession is not in Microsoft's CIF 2.0 API reference: call it only where the
          // library has it; otherwise the agent closes the session in Dynamics.
          if (typeof c.closeSession === "function") {
            try { await c.closeSession(st.sessionId); } catch (e) { warn("closeSession failed:", errorText(e)); }
          }
          st.sessionId = null;
          persist(id);
        }
      } catch (e) {
        warn("end failed:", errorText(e));
      }
    },

    async onClickToDial(handler) {
      try {
        const c = framework();
        if (!c) return false;
        let enabling;
        try { enabling = Promise.resolve(c.setClickToAct(true)); } catch (e) { enabling = Promise.reject(e); }
        c.addHandler("onclicktoact", (eventData) => {
          try {
            const payload = parse(eventData) || {};
            const number = payload.value == null ? "" : String(payload.value).trim();
            if (number && typeof handler === "function") handler(number, payload);
          } catch (e) {
            warn("click-to-dial handler failed:", errorText(e));
          }
          return Promise.resolve();
        });
        try { await enabling; } catch (e) { warn("setClickToAct failed (is Enable Outbound Communication on?):", errorText(e)); }
        return true;
      } catch (e) {
        warn("onClickToDial failed:", errorText(e));
        return false;
      }
    },
  };
}

function loadStore() {
  try {
    const v = JSON.parse(sessionStorage.getItem(STORE_KEY) || "{}");
    return v && typeof v === "object" && !Array.isArray(v) ? v : {};
  } catch {
    return {};
  }
}

// What a pop shows, to skip a repeated one but follow a changed one (identification done).
function signature(pop) {
  const ref = (r) => (r ? `${r.entity}:${r.id}` : "");
  return [pop.action, ref(pop.record), ref(pop.matched), (pop.records || []).map(ref).join(","), pop.entity || "", pop.query || ""].join("|");
}

function recordTitle(pop) {
  const r = pop.matched || pop.record || (pop.records && pop.records.length === 1 ? pop.records[0] : null);
  return r && r.title ? String(r.title) : "";
}

// An OData literal: a GUID bare (contactid eq 3518ddae-…), anything else quoted. Characters
// that would end the query option (& #) or change it (+ %) are percent-encoded.
function literal(id) {
  const s = String(id);
  const g = GUID.exec(s);
  if (g) return g[1];
  return `'${s.replace(/'/g, "''")}'`.replace(/[%&#+]/g, (ch) => "%" + ch.charCodeAt(0).toString(16).toUpperCase());
}

// The $search term for a list: the caller's number without characters that would break the
// query string ("+14155550142" → "14155550142").
function searchTerm(number) {
  return String(number || "").replace(/[^\p{L}\p{N} .()@_-]/gu, "").trim();
}
