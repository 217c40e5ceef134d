// HTTP to the hub: the fetch wrapper (CSRF token, timeout), problem+json errors as ApiError, what is worth retrying.
import { state } from "./state.js";

export const API = "/api/v1";
const REQUEST_TIMEOUT_MS = 15000;

// What a lost session means (ask to sign in again, keep everything) is up to session.js, which
// sits above every module that notices one: panel.js hands it in here.
let onSessionLost = () => {};
export function whenSessionLost(fn) { onSessionLost = fn; }
/** A request or the stream was refused: the session may have expired or been revoked. */
export function sessionLost() { onSessionLost(); }

class ApiError extends Error {
  constructor(status, detail, problem) {
    super(detail);
    this.status = status; // 0 = no answer (network, timeout)
    this.detail = detail;
    this.problem = problem;
  }
}

export async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && state.session?.csrf_token) headers["X-CSRF-Token"] = state.session.csrf_token;
  let res;
  try {
    res = await fetch(API + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
      cache: "no-store",
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
    });
  } catch (err) {
    const why = err?.name === "TimeoutError" ? "the server did not answer in time" : "the server cannot be reached";
    throw new ApiError(0, `No answer: ${why}.`);
  }
  if (res.status === 204) return null;
  const raw = await res.text().catch(() => "");
  let data = null;
  try { data = raw ? JSON.parse(raw) : null; } catch { data = null; }
  if (!res.ok) {
    const detail = data?.detail || data?.title || `${res.status} ${res.statusText || "error"}`;
    const err = new ApiError(res.status, detail, data);
    if (res.status === 401 && path !== "/session") sessionLost();
    throw err;
  }
  return data;
}

/** Worth trying again later (queued wrap-ups stay queued): no answer, timeouts, overload, signed out. */
export const retryable = (err) => !(err instanceof ApiError) || err.status === 0 || err.status === 401 || err.status === 408 || err.status === 429 || err.status >= 500;
