// The coordinator's H5 HTTP API (SPEC §5) for the page: JSON in and out, the SPEC error body
// raised as ApiError, and a session that renews itself from the QR token when it lapses.

const PREFIX = "/api/v1";
const STORE_KEY = "tablelock.h5.session";

/** A refused request; `error` is the SPEC error object ({code, message, message_en, ...}). */
export class ApiError extends Error {
  constructor(status, error) {
    super(error ? `${status} ${error.code}` : `HTTP ${status}`);
    this.status = status;
    this.error = error || { code: status === 0 ? "NETWORK" : `HTTP_${status}`, message: "", message_en: "" };
    this.code = this.error.code;
  }
}

/** Letters and digits, enough for a request id or payment reference that must not repeat. */
export function randomId(prefix) {
  const bytes = new Uint8Array(12);
  crypto.getRandomValues(bytes);
  return prefix + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** The session kept for this tab (sessionStorage: a reload keeps it, another tab is another diner). */
export function savedSession(qr) {
  try {
    const saved = JSON.parse(sessionStorage.getItem(STORE_KEY) || "null");
    if (saved && (!qr || saved.qr === qr) && saved.expires_at > Date.now() + 60_000) return saved;
  } catch (e) {
    /* storage unavailable or corrupt: open a new session */
  }
  return null;
}

function saveSession(session) {
  try {
    sessionStorage.setItem(STORE_KEY, JSON.stringify(session));
  } catch (e) {
    /* private mode: the session lives as long as the page */
  }
}

export class H5Api {
  constructor(qr, session = null) {
    this.qr = qr;
    this.session = session;
  }

  get token() {
    return this.session && this.session.session_token;
  }

  /** POST /h5/sessions with the table's QR token. */
  /** Ask for a waiter, water or the bill (SPEC §11); 429 while this kind cools down for the table. */
  serviceRequest(kind) {
    return this.request("POST", "/h5/service-requests", { kind });
  }

  async openSession() {
    if (!this.qr) throw new ApiError(401, null);
    const body = await this.raw("POST", "/h5/sessions", { qr_token: this.qr }, false);
    this.session = { qr: this.qr, ...body };
    saveSession(this.session);
    return this.session;
  }

  async raw(method, path, body, auth = true) {
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (auth && this.token) headers.Authorization = `Bearer ${this.token}`;
    let response;
    try {
      response = await fetch(PREFIX + path, {
        method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: "no-store",
      });
    } catch (e) {
      throw new ApiError(0, null);
    }
    // The Date header (whole seconds, so a lower bound) sets the server clock after a reload,
    // e.g. back from the provider's pay page, before any event has carried a timestamp.
    const date = Date.parse(response.headers.get("Date") || "");
    if (this.onServerTime && Number.isFinite(date)) this.onServerTime(date);
    let json = null;
    try {
      json = await response.json();
    } catch (e) {
      json = null;
    }
    if (!response.ok) throw new ApiError(response.status, json && json.error);
    return json;
  }

  /** An authenticated request; a lapsed session is reopened from the QR token once. */
  async request(method, path, body) {
    if (!this.token) await this.openSession();
    try {
      return await this.raw(method, path, body);
    } catch (e) {
      if (!(e instanceof ApiError) || e.status !== 401 || !this.qr) throw e;
      await this.openSession();
      return this.raw(method, path, body);
    }
  }

  table() {
    return this.request("GET", "/h5/table");
  }

  menu() {
    return this.request("GET", "/h5/menu");
  }

  addItems(items, requestId) {
    return this.request("POST", "/h5/items", { items, request_id: requestId });
  }

  /** POST /h5/checkout: the whole order, or with `share` (split bill, SPEC §10) my share of it. */
  checkout(share = null) {
    return this.request("POST", "/h5/checkout", share ? { share } : undefined);
  }

  cancel(token) {
    return this.request("POST", "/h5/checkout/cancel", { token });
  }

  /** POST /h5/payments/start: open the provider order for my claimed lock (SPEC §9). */
  startPayment(token, provider) {
    return this.request("POST", "/h5/payments/start", { token, provider });
  }

  /** The websocket URL for this session, resuming after `since`. */
  // The session token travels as a subprotocol (wsProtocols), never in the URL: URLs end up in logs.
  wsUrl(since) {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const query = since ? `?${new URLSearchParams({ since: String(since) })}` : "";
    return `${scheme}//${location.host}${PREFIX}/ws${query}`;
  }

  wsProtocols() {
    return ["tablelock.v1", `bearer.${this.token || ""}`];
  }
}
