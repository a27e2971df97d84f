// The diner's page: opens the session from ?qr=, shows the table, keeps it live, adds dishes and
// pays. The flow of a payment (SPEC §9):
//   支付 → POST /h5/checkout (the coordinator pulls the order from the ERP and takes the H5
//   payment lock) → countdown to the lock's expires_at on the server's clock → 微信支付 / 支付宝 →
//   POST /h5/payments/start → the provider's pay page in this tab (location.assign) → back to
//   /h5/ (the session and the started payment are in sessionStorage, never in the URL) →
//   "等待支付结果…" with the in-flight countdown until the coordinator's events say paid
//   (支付成功), failed (支付失败,请重试) or surplus (已退款). The lock ending under us before the
//   start (expired, forced, LOCK_LOST) shows a message and one button to fetch the order again.
// Split bill (SPEC §10): 分开付 opens a sheet to pick dishes, "AA N 人" and a part, an amount or the
// rest; that share is checked out and paid through the same provider flow (split.js, splitview.js).
// URL switches: ?qr=<QR token> (required on first open), ?lang=en, ?nows=1 (poll only, as old builds).

import { ApiError, H5Api, randomId, savedSession } from "./api.js";
import { ServerClock } from "./clock.js";
import { initialLang, translator } from "./i18n.js";
import { Live } from "./live.js";
import {
  applyEvent, checkedOut, derive, emptyState, expireLocally, fromTable, withLock, withOrder,
} from "./state.js";
import { afterResync, payEvent, started, WAITING, waitingSeconds } from "./payflow.js";
import { specOf, splitStep, splitSummary } from "./split.js";
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
  pick: null, // the split sheet's pick while it is open (split.js)
};
const api = new H5Api(qr || (savedSession(null) || {}).qr || null, savedSession(qr));
api.onServerTime = (ms) => clock.observe(ms);
let messageTimer = null;
// The seq to resume the socket from once, when back from the pay page (null: the state's own seq).
let resumeFrom = null;
let live = null;

function redraw() {
  const t = translator(ui.lang);
  const now = clock.now();
  render(root, { ...ui, t, view: { ...derive(ui.state, now), waitingSeconds: waitingSeconds(ui.state, now) },
    split: { summary: splitSummary(ui.state, now), pick: ui.pick } });
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
    // The events since our seq are gone: read the whole table again (and stop waiting for a
    // payment outcome that was among them).
    refreshTable().then(() => setState(afterResync(ui.state)), () => {});
    return;
  }
  if (msg.type === "event") {
    const fresh = typeof msg.seq !== "number" || msg.seq > ui.state.seq;
    // My trade's outcome first, whatever its seq (a replay after the pay page may be older than
    // the table read); then the table's state as usual.
    setState(applyEvent(payEvent(ui.state, msg), msg, clock.now()));
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

/** Check out the whole order, or with `share` (split bill) my share of it under its own lock. */
async function checkout(share = null) {
  ui.busy = "checkout";
  ui.frontdesk = false;
  redraw();
  try {
    const grant = await api.checkout(share);
    clock.observe(grant.lock.acquired_at);
    ui.pick = null;
    setState(checkedOut(ui.state, grant));
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

async function startPayment(provider) {
  const payment = ui.state.payment;
  if (!payment || payment.phase !== "confirm") return;
  setState({ ...ui.state, payment: { ...payment, phase: "starting", provider } });
  ui.busy = "pay";
  try {
    const reply = await api.startPayment(payment.token, provider);
    clock.observe(reply.lock && reply.lock.acquired_at);
    // Saved (sessionStorage) before leaving: the pay page sends the diner back to /h5/ in this tab.
    setState({ ...ui.state, payment: started(ui.state.payment || payment, reply, ui.state.seq) });
    if (reply.pay_url) location.assign(reply.pay_url);
  } catch (e) {
    if (e instanceof ApiError && e.status === 0) {
      // Unknown outcome: starting again with the same token answers the same trade.
      setState({ ...ui.state, payment: { ...payment, phase: "confirm" } });
      sayError(e);
    } else if (e instanceof ApiError && e.code === "LOCK_LOST") {
      const now = clock.now();
      setState({ ...ui.state, payment: null, lost: now !== null && now >= payment.expires_at ? "expired" : "forced" });
    } else if (e instanceof ApiError && e.code === "PAYMENT_UNAVAILABLE") {
      setState({ ...ui.state, payment: null });
      say({ key: "pay_unavailable" });
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

function reopenPayPage() {
  const payment = ui.state.payment;
  if (payment && payment.pay_url) location.assign(payment.pay_url);
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
  else if (id === "pay-button") checkout(derive(ui.state, clock.now()).payRest ? { rest: true } : null);
  else if (target.dataset.split || (id || "").startsWith("split-")) onSplit(target);
  else if (target.dataset.provider) startPayment(target.dataset.provider);
  else if (id === "reopen-pay") reopenPayPage();
  else if (id === "retry-pay") {
    const share = specOf(ui.state.payResult && ui.state.payResult.share);
    setState({ ...ui.state, payResult: null });
    checkout(share);
  } else if (id === "result-close") setState({ ...ui.state, payResult: null });
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

// A checkbox ticked, an amount typed in the split sheet.
root.addEventListener("change", (e) => e.target.dataset.split === "line" && onSplit(e.target));
root.addEventListener("input", (e) => e.target.dataset.split === "amount" && onSplit(e.target));

function onSplit(target) {
  const step = splitStep(ui.pick, target.dataset, target.value, splitSummary(ui.state, clock.now()), ui.state.order);
  ui.pick = step.pick;
  if (step.pay) checkout(step.pay);
  else redraw();
}

// --- start ----------------------------------------------------------------------------------

async function boot() {
  translateStatic(root, translator(ui.lang), ui.lang);
  redraw();
  if (!api.qr && !api.token) {
    ui.fatal = "session_failed";
    redraw();
    return;
  }
  // Read before the first table read: every setState writes the (still empty) payment back.
  const saved = stored(PAYMENT_KEY);
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
  if (saved && saved.out_trade_no && WAITING.has(saved.phase)) {
    // Back from the provider's pay page: wait for my trade's outcome, replaying the events
    // since the start (they may all have happened while the diner was away).
    setState({ ...ui.state, payment: { ...saved, phase: saved.phase === "completing" ? "completing" : "in_flight" } });
    resumeFrom = saved.since || 0;
  } else if (saved && saved.phase) {
    const mine = ui.state.locks.some((l) => l.kind === "payment" && l.fence === saved.fence && l.holder.is_me);
    if (mine) setState({ ...ui.state, payment: { ...saved, phase: "confirm" } });
    else store(PAYMENT_KEY, null);
  }
  loadMenu();
  live = new Live({
    url: (since) => api.wsUrl(since),
    protocols: () => api.wsProtocols(),
    since: () => {
      const since = resumeFrom === null ? ui.state.seq : Math.min(resumeFrom, ui.state.seq);
      resumeFrom = null;
      return since;
    },
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
