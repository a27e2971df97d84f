// The coordinator's admin HTTP API (SPEC §5) for the console: JSON in and out, the SPEC error body
// raised as ApiError. The admin token lives in sessionStorage (this tab only, gone when it closes);
// any 401 forgets it and hands control back to the sign-in form.

const PREFIX = "/api/v1";
const TOKEN_KEY = "tablelock.admin.token";

/** A refused request; `error` is the SPEC error object ({code, message, message_en, details, ...}). */
export class ApiError extends Error {
  constructor(status, error) {
    super(error ? `${status} ${error.code}` : `HTTP ${status}`);
    this.status = status;
    this.error = error || { code: status === 0 ? "NETWORK" : `HTTP_${status}`, message: "", message_en: "" };
    this.code = this.error.code;
    this.details = Array.isArray(this.error.details) ? this.error.details : [];
  }

  /** The server's message in `lang` (the SPEC body carries zh-CN and English). */
  text(lang) {
    const { message, message_en, code } = this.error;
    return (lang === "en" ? message_en || message : message || message_en) || code;
  }
}

function readToken() {
  try {
    return sessionStorage.getItem(TOKEN_KEY);
  } catch (e) {
    return null;
  }
}

function writeToken(token) {
  try {
    if (token === null) sessionStorage.removeItem(TOKEN_KEY);
    else sessionStorage.setItem(TOKEN_KEY, token);
  } catch (e) {
    /* storage unavailable: the token lives as long as the page */
  }
}

/** The path of a store's admin resource: `storePath("s1", "tables", "T1")`. */
export function storePath(storeId, ...parts) {
  return ["/admin/stores", storeId, ...parts].map((p, i) => (i === 0 ? p : encodeURIComponent(p))).join("/");
}

export class AdminApi {
  /** `onUnauthenticated()` runs whenever the coordinator answers 401 (the token is forgotten first). */
  constructor(onUnauthenticated) {
    this.onUnauthenticated = onUnauthenticated;
    this.token = readToken();
  }

  get signedIn() {
    return Boolean(this.token);
  }

  /** Check `token` against the coordinator (GET /admin/stores) and keep it for this tab. */
  async signIn(token) {
    const response = await this.raw("GET", "/admin/stores", undefined, token);
    if (!response.ok) throw new ApiError(response.status, null); // not fail(): no one is signed in yet
    this.token = token;
    writeToken(token);
  }

  signOut() {
    this.token = null;
    writeToken(null);
  }

  async raw(method, path, body, token = this.token) {
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (token) headers.Authorization = `Bearer ${token}`;
    let response;
    try {
      response = await fetch(PREFIX + path, {
        method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: "no-store",
      });
    } catch (e) {
      throw new ApiError(0, null);
    }
    return response;
  }

  /** A JSON request; resolves to the body (null for 204), rejects with ApiError. */
  async request(method, path, body) {
    const response = await this.raw(method, path, body);
    if (response.status === 204) return null;
    let json = null;
    try {
      json = await response.json();
    } catch (e) {
      json = null;
    }
    if (!response.ok) this.fail(response.status, json && json.error);
    return json;
  }

  /** A binary resource (the QR PNG) as a Blob, fetched with the Authorization header. */
  async blob(path) {
    const response = await this.raw("GET", path);
    if (!response.ok) {
      let json = null;
      try {
        json = await response.json();
      } catch (e) {
        json = null;
      }
      this.fail(response.status, json && json.error);
    }
    return response.blob();
  }

  fail(status, error) {
    if (status === 401) {
      this.signOut();
      this.onUnauthenticated();
    }
    throw new ApiError(status, error);
  }

  get(path, query) {
    const params = new URLSearchParams();
    for (const [key, value] of Object.entries(query || {})) {
      if (value !== null && value !== undefined && value !== "") params.set(key, String(value));
    }
    const qs = params.toString();
    return this.request("GET", qs ? `${path}?${qs}` : path);
  }

  /** The OpenAPI document (public): the configuration ranges come from it, so they never drift. */
  async openapi() {
    if (!this._openapi) {
      this._openapi = fetch(`${PREFIX}/openapi.json`, { cache: "no-store" }).then((r) => {
        if (!r.ok) throw new ApiError(r.status, null);
        return r.json();
      });
      this._openapi.catch(() => {
        this._openapi = null;
      });
    }
    return this._openapi;
  }
}
