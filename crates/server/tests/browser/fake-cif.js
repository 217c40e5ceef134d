/*
 * fake-cif.js: a recording stand-in for Dynamics 365's Channel Integration Framework library
 * (msdyn_ciLibrary.js) for the browser tests. Load it like the real one:
 *
 *   <script src="…/fake-cif.js[?v=2]" data-crmurl="https://org.crm.dynamics.com" data-cifid="CIFMainLibrary">
 *
 * Every call is appended to window.__cifCalls as {method, args}. CIFInitDone is dispatched on
 * window shortly after load. window.__cifClickToAct(payloadObject) simulates the agent
 * selecting a phone number in Dynamics (the onclicktoact event).
 * The v2 methods exist only when window.__cifVersion === 2 or the script URL has ?v=2.
 * Test knobs: window.__cifNotifyResponse = {actionName, responseReason} (default Accept/Accept);
 * window.__cifNotifyPending = true keeps notifyEvent pending until cancelEvent or
 * window.__cifAnswerNotify(response); window.__cifFail = {methodName: "message"} makes that
 * method reject with {message}; window.__cifOutboundEnabled = true raises onclicktoact even
 * without setClickToAct(true) (the provider's "Enable Outbound Communication").
 *
 * ---------------------------------------------------------------------------------------------
 * What the documentation says (facts only). Sources: the Microsoft Learn pages below; their
 * source is github.com/MicrosoftDocs/dynamics-365-customer-engagement,
 * ce/customer-service/channel-integration-framework/{shared,reference,v2/reference}/…
 * L1 = https://learn.microsoft.com/en-us/dynamics365/customer-service/channel-integration-framework/reference/microsoft-ciframework/
 * L2 = https://learn.microsoft.com/en-us/dynamics365/customer-service/channel-integration-framework/v2/reference/microsoft-ciframework/
 *
 * Loading (…/channel-integration-framework/pass-url-widget-library, v1 and v2 alike):
 *   <script type="text/javascript" src="https://ORG.crm.dynamics.com/webresources/Widget/msdyn_ciLibrary.js"
 *           data-crmurl="https://ORG.crm.dynamics.com" data-cifid="CIFMainLibrary"></script>
 *   (alternative: a `ucilib=<library URL>` parameter on the widget's landing URL).
 * CIFInitDone (…/reference/events/cifinitdone, v1 and v2): "raised by the Channel integration
 *   framework library when [it] is loaded … used to determine if CIF APIs are ready";
 *   example: window.addEventListener("CIFInitDone", function () { … }). The v2 API index says
 *   the handler "must be invoked before calling the other APIs". No payload is documented.
 *   The docs do not say how to detect that it already fired.
 * Every method returns a Promise (".then(successCallback, errorCallback)").
 *
 * searchAndOpenRecords(entityLogicalName: String, queryParameters: String, searchOnly: Boolean
 *     [, correlationId: GUID, searchType: Number 0 relevance | 1 categorized])  (L1 searchandopenrecords,
 *     L2 searchandopenrecords; the older v1 page lists only the first three)
 *   queryParameters: OData system query options starting with "?", joined by "&", written raw
 *   in every example (not percent-encoded), e.g.
 *     "?$select=fullname,telephone1&$filter=firstname eq 'Contoso'&$search=Contoso".
 *   Microsoft's softphone sample (…/channel-integration-framework/sample-softphone-integration)
 *   opens one record by id with "?$select=fullname&$filter=contactid eq " + id (GUID unquoted,
 *   as OData v4 writes GUID literals).
 *   searchOnly=false: one result → the record opens; several results → the search page opens,
 *   prefilled with the $search term when the query has one ("If you are using $search … it'll
 *   always open the search results page and not the retrieved record"); with no $search an
 *   empty search page. Only account and contact (v1: also activity) records open on several
 *   results. searchOnly=true: only returns the results.
 *   Resolves a String: JSON array of the records (examples: res = JSON.parse(result); res[0].fullname).
 *   At most 5000 records.
 * createRecord(entityLogicalName: String, data: String)  (L1 createrecord)
 *   data is a JSON string of column → value (example: JSON.stringify({firstname: …, telephone1: …});
 *   lookups as "primarycontactid@odata.bind": "/contacts(guid)").
 *   "Creates an entity record": it SAVES the record (no form is shown). Resolves a String with
 *   the attributes; examples read JSON.parse(result).id.
 * renderSearchPage(entityLogicalName: String, searchString: String [, searchType])  (L1 rendersearchpage)
 *   "opens the Unified Interface entity page with the search field on it prepopulated with the
 *   search string". Resolves "a promise object" (no shape documented).
 * openForm(entityFormOptions, formParameters)  (L1 openform; not used by cif.js)
 *   opens an entity or quick create form without saving; the example passes
 *   JSON.stringify(entityFormOptions), JSON.stringify(formParameters). Resolves a String.
 * setClickToAct(value: Boolean)  (L1 setclicktoact) → "Type: Null".
 * getClickToAct() → Boolean.
 * addHandler(eventName: String, handlerFunction)  (L1 addhandler, L2 addhandler): events
 *   onclicktoact, onmodechanged, onsizechanged, onpagenavigate, onsendkbarticle (v2 also
 *   onSessionClosed, onSessionSwitched, custom names). The example handler returns
 *   Promise.resolve(). No return value documented.
 * onclicktoact eventData (…/reference/events/onclicktoact, v1 and v2):
 *   {"value": <field_value>, "name": <field_name>, "format": <field_type>, "entityLogicalName": <entity>}
 *   e.g. {"value": "123456789", "name": "mobilephone", "format": "phone", "entityLogicalName": "contact"}.
 *   The docs do not say whether the handler gets an object or a string; Microsoft's sample
 *   handler does JSON.parse(paramStr) and reads .value, so this fake passes a JSON string.
 *   (Third-party integrations also read .entityId and .recordTitle: undocumented; the fake
 *   passes whatever keys the test gives.)
 *   onclicktoact fires only when setClickToAct(true) was called or the channel provider has
 *   "Enable Outbound Communication" = Yes (…/enable-outbound-communication-clicktoact).
 * getEnvironment()  (L1 getenvironment, L2 getenvironment) → String "with details of the current
 *   Unified Interface app and page"; named keys: appid, pagetype, etn, id (v2: only when the
 *   focused session belongs to the provider), customParams (the provider's Custom Parameter).
 *   Microsoft's sample JSON.parses it and reads userId ("{guid}").
 *
 * v2 only (Channel Integration Framework 2.0, multisession apps: Customer Service workspace):
 * canCreateSession([correlationId]) → Boolean  (L2 cancreatesession); createSession's page says
 *   "Before you call this method, you must call canCreateSession".
 * createSession(input, [correlationId]) → String, the new session's id  (L2 createsession)
 *   input: {templateName: "<unique name of session template>", templateParameters: {globalparam: …,
 *   "app template 1": {"param 1": …}}} (older page also "templateTag"). Documented as "JSON
 *   string", passed as an object in every example. Only session templates of type Generic;
 *   at most 10 sessions at once.
 * notifyEvent(input, [correlationId])  (L2 notifyevent) shows the incoming-conversation toast.
 *   input: {templateName: "<notification template unique name>", templateParameters: {…},
 *   cancellationToken: "<unique string>"} (object in the examples). Resolves when the agent
 *   answers: {"value": {"actionName": "Accept"|"Reject"|"Timeout", "responseReason": "Accept"|
 *   "AutoAccept"|"DeclinedByAgent"|"NotificationQueueLimitExceeded"|
 *   "NotificationQueueTimeLimitExceeded"|"DisplayTimeout"}}; Microsoft's sample JSON.parses the
 *   result and reads resp.actionName at the top level. Errors: {message:
 *   "NotificationTemplateNotFoundError"|"RejectAfterClientError", msdyn_name: "NotifyEvent"}.
 *   templateNameResolver is NOT documented on Learn (only an optional string in community
 *   TypeScript declarations); cif.js does not send it.
 * cancelEvent(cancellationToken, [correlationId])  (L2 cancelevent) hides that toast.
 * getFocusedSession() → String session id, or null if the focused session is not the
 *   provider's  (L2 getfocusedsession). getAllSessions() → array of ids. requestFocusSession(id).
 * closeSession: NOT DOCUMENTED for Microsoft.CIFramework (not in the v2 API index; sessions are
 *   closed by the agent, onSessionClosed tells the widget). This fake offers
 *   closeSession(sessionId) → Boolean as an ASSUMED shape; cif.js calls it only if it exists.
 * Detecting v2: not documented; the API Version field of the channel provider record says it.
 *   cif.js uses [panel.dynamics] cif_version, else typeof Microsoft.CIFramework.createSession.
 * ---------------------------------------------------------------------------------------------
 */
(function () {
  "use strict";

  var script = document.currentScript || document.querySelector('script[data-cifid="CIFMainLibrary"]');
  var src = (script && script.src) || "";
  var crmUrl = (script && script.getAttribute("data-crmurl")) || "https://org.crm.dynamics.com";
  var noHash = src.split("#")[0];
  var search = noHash.indexOf("?") >= 0 ? noHash.slice(noHash.indexOf("?")) : "";
  var v2 = window.__cifVersion === 2 || /[?&]v=2(&|$)/.test(search);

  if (!Array.isArray(window.__cifCalls)) window.__cifCalls = [];
  var handlers = {};           // eventName (lower case) → [function]
  var clickToAct = false;
  var sessions = [];           // open session ids, in creation order
  var sessionCounter = 0;
  var recordCounter = 0;

  function copy(value) {
    if (typeof value === "function") return "[function]";
    if (value === undefined) return undefined;
    try { return JSON.parse(JSON.stringify(value)); } catch (e) { return String(value); }
  }

  // Records the call, then settles like the real API: asynchronously.
  function call(method, args, result) {
    window.__cifCalls.push({ method: method, args: Array.prototype.map.call(args, copy) });
    var fail = window.__cifFail && window.__cifFail[method];
    return new Promise(function (resolve, reject) {
      setTimeout(function () {
        if (fail) { reject({ message: String(fail), msdyn_name: method }); return; }
        try { resolve(typeof result === "function" ? result() : result); } catch (e) { reject({ message: String(e && e.message || e) }); }
      }, 0);
    });
  }

  function guid() {
    recordCounter += 1;
    var n = String(recordCounter).padStart(12, "0");
    return "00000000-0000-4000-8000-" + n;
  }

  // The records a query's `$filter=<field> eq <value> [or …]` names, as the real API's JSON
  // array would list them (only the filtered columns: the fake has no data).
  function recordsFor(query) {
    var m = /\$filter=([^&]*)/.exec(String(query || ""));
    if (!m) return [];
    var out = [];
    var re = /([A-Za-z_][A-Za-z0-9_]*) eq ('(?:[^']|'')*'|[^ )]+)/g;
    var t;
    while ((t = re.exec(m[1]))) {
      var v = t[2];
      if (v.charAt(0) === "'") v = v.slice(1, -1).replace(/''/g, "'");
      var r = {};
      r[t[1]] = v;
      out.push(r);
    }
    return out;
  }

  var api = {
    getEnvironment: function () {
      return call("getEnvironment", arguments, function () {
        return JSON.stringify({
          appid: "00000000-0000-4000-8000-0000000000aa",
          pagetype: "dashboard",
          etn: "",
          id: "",
          clientUrl: crmUrl,
          userId: "{00000000-0000-4000-8000-0000000000bb}",
          customParams: "",
        });
      });
    },
    searchAndOpenRecords: function (entityLogicalName, queryParameters, searchOnly) {
      return call("searchAndOpenRecords", arguments, function () { return JSON.stringify(recordsFor(queryParameters)); });
    },
    createRecord: function (entityLogicalName, data) {
      return call("createRecord", arguments, function () {
        var fields = JSON.parse(data); // the real API wants a JSON string; a non-string fails here too
        var rec = { id: guid() };
        Object.keys(fields).forEach(function (k) { rec[k] = fields[k]; });
        return JSON.stringify(rec);
      });
    },
    renderSearchPage: function (entityLogicalName, searchString) {
      return call("renderSearchPage", arguments, undefined);
    },
    openForm: function (entityFormOptions, formParameters) {
      return call("openForm", arguments, function () { return JSON.stringify({ savedEntityReference: [] }); });
    },
    setClickToAct: function (value) {
      clickToAct = value === true;
      return call("setClickToAct", arguments, null);
    },
    getClickToAct: function () {
      return call("getClickToAct", arguments, function () { return clickToAct; });
    },
    addHandler: function (eventName, handlerFunction) {
      window.__cifCalls.push({ method: "addHandler", args: [eventName, "[function]"] });
      var key = String(eventName).toLowerCase();
      (handlers[key] = handlers[key] || []).push(handlerFunction);
    },
    removeHandler: function (eventName, handlerFunction) {
      window.__cifCalls.push({ method: "removeHandler", args: [eventName, "[function]"] });
      var key = String(eventName).toLowerCase();
      handlers[key] = (handlers[key] || []).filter(function (h) { return h !== handlerFunction; });
    },
    setMode: function (mode) { return call("setMode", arguments, null); },
    getMode: function () { return call("getMode", arguments, 1); },
  };

  if (v2) {
    api.canCreateSession = function () {
      return call("canCreateSession", arguments, function () { return sessions.length < 10; });
    };
    api.createSession = function (input) {
      return call("createSession", arguments, function () {
        if (sessions.length >= 10) throw new Error("at most 10 sessions");
        sessionCounter += 1;
        var id = "session-id-" + sessionCounter;
        sessions.push(id);
        return id;
      });
    };
    api.getFocusedSession = function () {
      return call("getFocusedSession", arguments, function () { return sessions.length ? sessions[sessions.length - 1] : null; });
    };
    api.getAllSessions = function () {
      return call("getAllSessions", arguments, function () { return sessions.slice(); });
    };
    api.requestFocusSession = function (sessionId) {
      return call("requestFocusSession", arguments, function () { return sessions.indexOf(sessionId) >= 0; });
    };
    // With window.__cifNotifyPending = true the toast stays up until cancelEvent(token) (it
    // then answers Timeout/DisplayTimeout: the docs do not say what a cancelled toast answers)
    // or window.__cifAnswerNotify(response).
    var pendingToasts = [];
    api.notifyEvent = function (input) {
      if (!window.__cifNotifyPending) {
        return call("notifyEvent", arguments, function () {
          var r = window.__cifNotifyResponse || { actionName: "Accept", responseReason: "Accept" };
          return JSON.stringify({ value: r });
        });
      }
      window.__cifCalls.push({ method: "notifyEvent", args: Array.prototype.map.call(arguments, copy) });
      return new Promise(function (resolve) {
        pendingToasts.push({ token: input && input.cancellationToken, resolve: resolve });
      });
    };
    window.__cifAnswerNotify = function (response) {
      var list = pendingToasts.splice(0);
      list.forEach(function (t) { t.resolve(JSON.stringify({ value: response || { actionName: "Accept", responseReason: "Accept" } })); });
      return list.length;
    };
    api.cancelEvent = function (cancellationToken) {
      pendingToasts = pendingToasts.filter(function (t) {
        if (t.token !== cancellationToken) return true;
        t.resolve(JSON.stringify({ value: { actionName: "Timeout", responseReason: "DisplayTimeout" } }));
        return false;
      });
      return call("cancelEvent", arguments, function () { return cancellationToken; });
    };
    // ASSUMED shape: closeSession is not documented for Microsoft.CIFramework (see above).
    api.closeSession = function (sessionId) {
      return call("closeSession", arguments, function () {
        var i = sessions.indexOf(sessionId);
        if (i >= 0) sessions.splice(i, 1);
        return i >= 0;
      });
    };
  }

  window.Microsoft = window.Microsoft || {};
  window.Microsoft.CIFramework = api;

  // Simulates the agent selecting a click-to-act phone field. Returns a promise of the
  // handlers' results; false when click-to-act is off (the real CIF does not raise the event).
  window.__cifClickToAct = function (payloadObject) {
    if (!clickToAct && !window.__cifOutboundEnabled) return Promise.resolve(false);
    var payload = Object.assign({ value: "", name: "telephone1", format: "phone", entityLogicalName: "contact" }, payloadObject || {});
    var data = JSON.stringify(payload);
    var list = (handlers.onclicktoact || []).slice();
    return Promise.all(list.map(function (h) {
      try { return Promise.resolve(h(data)); } catch (e) { return Promise.reject(e); }
    }));
  };

  window.__cifVersionLoaded = v2 ? 2 : 1;
  setTimeout(function () {
    window.__cifInitDone = true;
    window.dispatchEvent(new Event("CIFInitDone"));
  }, 30);
})();
