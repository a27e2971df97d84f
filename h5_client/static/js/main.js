// The diner's page: opens the session from ?qr=, shows the table, keeps it live, adds dishes and
// pays. The flow of a payment (SPEC §5):
//   支付 → POST /h5/checkout (the coordinator pulls the order from the ERP and takes the H5
//   payment lock) → countdown to the lock's expires_at on the server's clock → 确认支付 →
//   POST /h5/payments → paid screen. The lock ending under us (expired, forced, LOCK_LOST) shows
//   a message and one button to fetch the order again.
// URL switches: ?qr=<QR token> (required on first open), ?lang=en, ?nows=1 (poll only, as old builds).

import { ApiError, H5Api, randomId, savedSession } from "./api.js";
import { ServerClock } from "./clock.js";
import { initialLang, translator } from "./i18n.js";
import { Live } from "./live.js";
import {
  applyEvent, checkedOut, derive, emptyState, expireLocally, fromTable, withLock, withOrder,
} from "./state.js";
import { render, translateStatic } from "./view.js";

const params = new URLSearchParams(location.search);
const root = document.getElementById("app");
const clock = new ServerClock();
const PAYMENT_KEY = "tablelock.h5.payment";
const LANG_KEY = "tablelock.h5.lang";

function stored(key) {
  try {
    return JSON.parse(sessionStorage.getItem(key) || "null");
  } catch (e) {
    return null;
  }
}

function store(key, value) {
  try {
    if (value === null) sessionStorage.removeItem(key);
    else sessionStorage.setItem(key, JSON.stringify(value));
  } catch (e) {
    /* no storage: the page still works, a reload just forgets */
  }
}

let savedLang = null;
try {
  savedLang = localStorage.getItem(LANG_KEY);
} catch (e) {
  savedLang = null;
}

const qr = params.get("qr");
const ui = {
  state: emptyState(),
  lang: initialLang(params.get("lang") || savedLang),
  menu: null,
  menuError: false,
  cart: {},
  cartRequestId: null,
  busy: null,
  message: null,
  frontdesk: false,
  conn: "connecting",
  fatal: null,
  service: null,
};
const api = new H5Api(qr || (savedSession(null) || {}).qr || null, savedSession(qr));
let messageTimer = null;
let live = null;

function redraw() {
  const t = translator(ui.lang);
  render(root, { ...ui, t, view: derive(ui.state, clock.now()) });
}

function setState(next) {
  ui.state = next;
  // Keep my checkout across a reload of this tab; it is dropped as soon as it ends.
  store(PAYMENT_KEY, next.payment);
  redraw();
}

function say(message) {
  ui.message = message;
  clearTimeout(messageTimer);
  messageTimer = setTimeout(() => {
    ui.message = null;
    redraw();
  }, 6000);
  redraw();
}

function sayError(e) {
  if (e instanceof ApiError && e.status !== 0 && e.error && e.error.message) say({ error: e.error });
  else say({ key: "network_error" });
}

// --- loading --------------------------------------------------------------------------------

async function refreshTable() {
  const askedWith = ui.state.payment ? ui.state.payment.token : null;
  const body = await api.table();
  setState(fromTable(ui.state, body, clock.now(), askedWith));
}

async function loadMenu() {
  try {
    const body = await api.menu();
    ui.menu = body.items || [];
    ui.menuError = false;
  } catch (e) {
    ui.menuError = !ui.menu;
    setTimeout(loadMenu, 5000);
  }
  redraw();
}

function onMessage(msg) {
  if (typeof msg.ts === "number") clock.observe(msg.ts);
  if (msg.type === "hello") {
    return;
  }
  if (msg.type === "snapshot") {
    // The events since our seq are gone: read the whole table again.
    refreshTable().catch(() => {});
    return;
  }
  if (msg.type === "event") {
    const fresh = typeof msg.seq !== "number" || msg.seq > ui.state.seq;
    setState(applyEvent(ui.state, msg, clock.now()));
    if (fresh) onTableEvent(msg);
  }
}

// SPEC §11: the party moved (or its order was merged): this session now belongs to the new table;
// a waiter took a service request of this table.
function onTableEvent(msg) {
  if (msg.name === "order.moved" || msg.name === "order.merged") {
    say({ key: "order_moved" });
    refreshTable().catch(() => {});
    if (live) live.resubscribe();
  } else if (msg.name === "service.taken") {
    ui.service = "taken";
    say({ key: "service_taken" });
  }
}

async function askService(kind) {
  try {
    await api.serviceRequest(kind);
    ui.service = "sent";
    say({ key: "service_sent" });
  } catch (e) {
    sayError(e);
  }
}

// --- actions --------------------------------------------------------------------------------

async function checkout() {
  ui.busy = "checkout";
  ui.frontdesk = false;
  redraw();
  try {
    const grant = await api.checkout();
    clock.observe(grant.lock.acquired_at);
    setState(checkedOut(ui.state, grant, randomId("h5pay-")));
  } catch (e) {
    if (e instanceof ApiError && e.code === "ERP_UNREACHABLE") {
      ui.frontdesk = true;
    } else {
      if (e instanceof ApiError) setState(withLock(withOrder(ui.state, e.error.order), e.error.lock));
      sayError(e);
      refreshTable().catch(() => {});
    }
  } finally {
    ui.busy = null;
    redraw();
  }
}

async function confirmPayment() {
  const payment = ui.state.payment;
  if (!payment || payment.phase !== "confirm") return;
  setState({ ...ui.state, payment: { ...payment, phase: "paying" } });
  ui.busy = "pay";
  try {
    const body = await api.pay(payment);
    setState({ ...withOrder(ui.state, body.order), order: body.order, payment: null, paidByMe: true, lost: null });
  } catch (e) {
    if (e instanceof ApiError && e.status === 0) {
      // Unknown outcome: let the diner confirm again; the same payment_ref makes it idempotent.
      setState({ ...ui.state, payment: { ...payment, phase: "confirm" } });
      sayError(e);
    } else if (e instanceof ApiError && e.code === "LOCK_LOST") {
      const now = clock.now();
      setState({ ...ui.state, payment: null, lost: now !== null && now >= payment.expires_at ? "expired" : "forced" });
    } else if (e instanceof ApiError && e.code === "ERP_UNREACHABLE") {
      setState({ ...ui.state, payment: null });
      ui.frontdesk = true;
    } else {
      let next = { ...ui.state, payment: null };
      if (e instanceof ApiError && e.error.order) next = withOrder(next, e.error.order);
      setState(next);
      sayError(e);
    }
    refreshTable().catch(() => {});
  } finally {
    ui.busy = null;
    redraw();
  }
}

async function cancelPayment() {
  const payment = ui.state.payment;
  if (!payment) return;
  setState({ ...ui.state, payment: null });
  try {
    await api.cancel(payment.token);
  } catch (e) {
    /* the lock expires on its own within seconds */
  }
  refreshTable().catch(() => {});
}

async function refetch() {
  setState({ ...ui.state, lost: null });
  try {
    await refreshTable();
  } catch (e) {
    sayError(e);
  }
}

async function submitItems() {
  const items = Object.entries(ui.cart).filter(([, qty]) => qty > 0).map(([sku, qty]) => ({ sku, qty }));
  if (!items.length) return;
  // One id per cart: a retry after a lost answer cannot add the dishes twice.
  ui.cartRequestId = ui.cartRequestId || randomId("h5items-");
  ui.busy = "items";
  redraw();
  try {
    const body = await api.addItems(items, ui.cartRequestId);
    ui.cart = {};
    ui.cartRequestId = null;
    setState(withOrder(ui.state, body.order));
    say({ key: "items_added" });
  } catch (e) {
    if (e instanceof ApiError) setState(withLock(withOrder(ui.state, e.error.order), e.error.lock));
    sayError(e);
  } finally {
    ui.busy = null;
    redraw();
  }
}

function changeCart(sku, delta) {
  const qty = Math.max(0, Math.min(999, (ui.cart[sku] || 0) + delta));
  ui.cart = { ...ui.cart, [sku]: qty };
  if (!qty) delete ui.cart[sku];
  ui.cartRequestId = null;
  redraw();
}

function setLang(lang) {
  ui.lang = lang;
  try {
    localStorage.setItem(LANG_KEY, lang);
  } catch (e) {
    /* the choice lasts for this page only */
  }
  translateStatic(root, translator(lang), lang);
  redraw();
}

root.addEventListener("click", (e) => {
  const target = e.target.closest("button");
  if (!target || target.disabled) return;
  const id = target.dataset.testid;
  if (target.dataset.action === "more") changeCart(target.dataset.sku, 1);
  else if (target.dataset.action === "less") changeCart(target.dataset.sku, -1);
  else if (id === "pay-button") checkout();
  else if (id === "confirm-pay") confirmPayment();
  else if (id === "cancel-pay") cancelPayment();
  else if (id === "refetch") refetch();
  else if (id === "submit-items") submitItems();
  else if (target.dataset.action === "service") askService(target.dataset.kind);
  else if (id === "lang-toggle") setLang(ui.lang === "en" ? "zh-CN" : "en");
  else if (id === "frontdesk-close") {
    ui.frontdesk = false;
    redraw();
  } else if (id === "message") {
    ui.message = null;
    redraw();
  }
});

// --- start ----------------------------------------------------------------------------------

async function boot() {
  translateStatic(root, translator(ui.lang), ui.lang);
  redraw();
  if (!api.qr && !api.token) {
    ui.fatal = "session_failed";
    redraw();
    return;
  }
  try {
    if (!api.token) await api.openSession();
    await refreshTable();
  } catch (e) {
    ui.fatal = e instanceof ApiError && (e.status === 401 || e.status === 404) ? "session_failed" : "network_error";
    redraw();
    if (ui.fatal === "network_error") setTimeout(() => location.reload(), 5000);
    return;
  }
  // A checkout this tab made before a reload is still ours while its lock is.
  const saved = stored(PAYMENT_KEY);
  if (saved && saved.phase) {
    const mine = ui.state.locks.some((l) => l.kind === "payment" && l.fence === saved.fence && l.holder.is_me);
    if (mine) setState({ ...ui.state, payment: { ...saved, phase: "confirm" } });
    else store(PAYMENT_KEY, null);
  }
  loadMenu();
  live = new Live({
    url: (since) => api.wsUrl(since),
    protocols: () => api.wsProtocols(),
    since: () => ui.state.seq,
    onMessage,
    poll: refreshTable,
    onState: (state) => {
      ui.conn = state;
      redraw();
    },
    onAuthLost: () => api.openSession(),
    websocket: params.get("nows") !== "1",
  });
  live.start();
  // The countdown, and locks passing expires_at before their lock.expired event arrives.
  setInterval(() => {
    const next = expireLocally(ui.state, clock.now());
    if (next !== ui.state) setState(next);
    else redraw();
  }, 250);
}

boot();
