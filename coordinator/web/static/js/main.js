// The admin console: sign-in with the admin token, a hash router over the store's pages, and the
// language switch. Each page is a module with `mount(ctx, root) → unmount`; leaving a page
// unmounts it, which stops its polling.
//
// Routes: #/stores · #/stores/<store_id>/<section>[?order_id=…]
// sections: config, terminals, tables, paysettings (配置管理) · board, audit, reconciliation,
// payrecon (运营监控)

import { AdminApi, ApiError } from "./api.js";
import { el, toast } from "./dom.js";
import { initialLang, saveLang, translateStatic, translator } from "./i18n.js";
import * as audit from "./audit.js";
import * as board from "./board.js";
import * as paysettings from "./paysettings.js";
import * as payrecon from "./payrecon.js";
import * as config from "./config.js";
import * as reconciliation from "./reconciliation.js";
import * as stores from "./stores.js";
import * as tables from "./tables.js";
import * as terminals from "./terminals.js";

const SECTIONS = {
  config: { view: config, group: "group_config", title: "nav_config" },
  terminals: { view: terminals, group: "group_config", title: "nav_terminals" },
  tables: { view: tables, group: "group_config", title: "nav_tables" },
  board: { view: board, group: "group_ops", title: "nav_board" },
  audit: { view: audit, group: "group_ops", title: "nav_audit" },
  reconciliation: { view: reconciliation, group: "group_ops", title: "nav_reconciliation" },
  paysettings: { view: paysettings, group: "group_config", title: "nav_paysettings" },
  payrecon: { view: payrecon, group: "group_ops", title: "nav_payrecon" },
};

const app = document.querySelector('[data-testid="app"]');
const $ = (testid) => app.querySelector(`[data-testid="${testid}"]`);
const signin = $("signin");
const shell = $("shell");
const viewRoot = $("view");

let lang = initialLang();
let t = translator(lang);
let unmount = null;
let storesCache = null; // GET /admin/stores, refreshed on every route change
let routing = 0; // bumps on every route change, so a slow earlier one never mounts over a later one
const api = new AdminApi(() => showSignIn("signin_expired"));

/** The hash of a page: `href("s1", "audit", {order_id: "o1"})`. */
function href(storeId, section, params) {
  if (!storeId) return "#/stores";
  const qs = params ? new URLSearchParams(params).toString() : "";
  return `#/stores/${encodeURIComponent(storeId)}/${section}${qs ? `?${qs}` : ""}`;
}

function parseRoute() {
  const [pathPart, query = ""] = location.hash.replace(/^#/, "").split("?");
  const parts = pathPart.split("/").filter(Boolean).map(decodeURIComponent);
  if (parts[0] === "stores" && parts.length >= 2) {
    const section = SECTIONS[parts[2]] ? parts[2] : "config";
    return { storeId: parts[1], section, params: Object.fromEntries(new URLSearchParams(query)) };
  }
  return { storeId: null, section: null, params: {} };
}

/** Tell the admin what went wrong; a 401 has already sent them back to sign-in. */
function fail(error) {
  if (error instanceof ApiError) {
    if (error.status === 401) return;
    toast(error.status === 0 ? t("network_error") : t("request_failed", error.text(lang)), "error");
    return;
  }
  console.error(error);
  toast(t("request_failed", String(error && error.message ? error.message : error)), "error");
}

function crumbs(items) {
  const nav = $("breadcrumb");
  nav.replaceChildren(...items.flatMap((text, i) => [
    i ? el("span", { class: "sep", "aria-hidden": "true", text: " — " }) : null,
    el("span", { class: i === items.length - 1 ? "crumb current" : "crumb", text }),
  ]).filter(Boolean));
}

async function loadStores() {
  storesCache = (await api.request("GET", "/admin/stores")).stores;
  return storesCache;
}

function stopView() {
  if (unmount) unmount();
  unmount = null;
  viewRoot.replaceChildren();
}

async function route() {
  if (!api.signedIn) return showSignIn(null);
  const generation = ++routing;
  stopView();
  const { storeId, section, params } = parseRoute();
  const side = $("side-store");
  for (const link of app.querySelectorAll(".side-link")) link.classList.remove("active");
  let list;
  try {
    list = await loadStores();
  } catch (e) {
    fail(e);
    return;
  }
  if (!api.signedIn || generation !== routing) return;
  if (!storeId) {
    side.hidden = true;
    $("nav-stores").classList.add("active");
    crumbs([t("console_title"), t("nav_stores")]);
    document.title = `${t("nav_stores")} · ${t("console_title")}`;
    unmount = stores.mount(context(null, params), viewRoot);
    return;
  }
  const store = list.find((s) => s.store_id === storeId);
  if (!store) {
    side.hidden = true;
    crumbs([t("console_title"), t("nav_stores")]);
    viewRoot.replaceChildren(el("p", { class: "empty card", testid: "store-missing", text: `${t("not_found")}: ${storeId}` }));
    return;
  }
  side.hidden = false;
  $("current-store").textContent = `${store.name} · ${store.store_id}`;
  for (const link of side.querySelectorAll("[data-section]")) {
    link.href = href(storeId, link.dataset.section);
    link.classList.toggle("active", link.dataset.section === section);
  }
  const page = SECTIONS[section];
  crumbs([t("console_title"), t(page.group), t(page.title)]);
  document.title = `${t(page.title)} · ${store.name} · ${t("console_title")}`;
  viewRoot.dataset.section = section;
  unmount = page.view.mount(context(storeId, params), viewRoot);
}

function context(storeId, params) {
  return {
    api, t, lang, storeId, params, href, fail,
    navigate: (id, section, query) => {
      location.hash = href(id, section, query);
    },
    store: async () => (storesCache || (await loadStores())).find((s) => s.store_id === storeId),
  };
}

function showSignIn(reason) {
  stopView();
  shell.hidden = true;
  signin.hidden = false;
  const error = $("signin-error");
  error.textContent = reason ? t(reason) : "";
  error.hidden = !reason;
  $("signin-token").value = "";
  $("signin-token").focus();
}

function showShell() {
  signin.hidden = true;
  shell.hidden = false;
  route();
}

function applyLang(next) {
  lang = next;
  t = translator(lang);
  saveLang(lang);
  document.documentElement.lang = lang;
  translateStatic(document, t);
}

function switchLang() {
  applyLang(lang === "en" ? "zh-CN" : "en");
  if (!shell.hidden) route();
}

$("signin-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const token = $("signin-token").value.trim();
  const error = $("signin-error");
  const button = $("signin-submit");
  if (!token) {
    error.textContent = t("signin_empty");
    error.hidden = false;
    return;
  }
  button.disabled = true;
  button.textContent = t("signing_in");
  try {
    await api.signIn(token);
    showShell();
  } catch (e) {
    error.textContent = e instanceof ApiError && e.status === 401 ? t("signin_bad")
      : e instanceof ApiError && e.status === 0 ? t("network_error") : t("request_failed", e.message);
    error.hidden = false;
  } finally {
    button.disabled = false;
    button.textContent = t("signin");
  }
});

$("lang-toggle").addEventListener("click", switchLang);
$("signin-lang").addEventListener("click", switchLang);
$("signout").addEventListener("click", () => {
  api.signOut();
  showSignIn(null);
});
window.addEventListener("hashchange", () => {
  if (!shell.hidden) route();
});

applyLang(lang);
if (api.signedIn) showShell();
else showSignIn(null);
app.dataset.ready = "1";
