// Drawing the model into the page. Each part is redrawn only when what it shows changed, so a
// button under the diner's finger is not replaced by the 250 ms countdown tick.

import { $, changed, el, show } from "./dom.js";
import { errorText, money } from "./i18n.js";
import { lineMark, renderSplitPanel, renderSplitSummary } from "./splitview.js";

/** Translate every element that carries data-i18n. */
export function translateStatic(root, t, lang) {
  document.documentElement.lang = lang;
  document.title = t("title");
  for (const node of root.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
  $(root, "lang-toggle").textContent = t("lang_switch");
}

function bannerText(banner, t) {
  switch (banner.kind) {
    case "payment":
      return [t("banner_payment"), t(banner.by === "h5" ? "banner_payment_h5" : "banner_payment_erp")];
    case "share":
      return [t(banner.by === "h5" ? "banner_share_h5" : "banner_share_erp"), t("banner_share_sub")];
    default:
      return [t(`banner_${banner.kind}`), null];
  }
}

/**
 * Draw the page for `m` = {state, view, t, lang, menu, menuError, cart, busy, message, frontdesk,
 * conn, fatal, split: {summary, pick}} (split.js: the table's split and the diner's open pick).
 */
export function render(root, m) {
  const { state, view, t, lang } = m;
  const ready = !!state.table || !!m.fatal;
  root.dataset.ready = ready ? "1" : "0";
  show($(root, "loading"), !ready);

  const fatal = $(root, "fatal");
  show(fatal, !!m.fatal);
  if (m.fatal) fatal.textContent = t(m.fatal);

  $(root, "store-name").textContent = state.store ? state.store.name : "";
  $(root, "table-name").textContent = state.table ? `${t("table")} ${state.table.name}` : "";

  const conn = $(root, "conn");
  conn.dataset.state = m.conn || "connecting";
  conn.textContent = t(`conn_${m.conn || "connecting"}`);
  show(conn, ready && !m.fatal && m.conn !== "live");

  const banners = $(root, "banners");
  if (changed(banners, [lang, view.banners])) {
    banners.replaceChildren(...view.banners.map((b) => {
      const [text, sub] = bannerText(b, t);
      return el("div", { class: "banner", "data-testid": "banner", "data-kind": b.kind, role: "status" },
        document.createTextNode(text), sub && el("small", { text: sub }));
    }));
  }

  renderOrder(root, m);
  renderSplitSummary(root, m);
  renderMenu(root, m);
  renderBar(root, m);
  renderSheets(root, m);
  renderSplitPanel(root, m);

  // SPEC §11: the table's last service request, until a waiter took it ("服务员已收到").
  const service = $(root, "service-state");
  show(service, !!m.service);
  if (m.service) {
    service.textContent = t(m.service === "taken" ? "service_taken" : "service_sent");
    service.dataset.state = m.service;
  }

  const toast = $(root, "message");
  show(toast, !!m.message);
  if (m.message) {
    toast.textContent = m.message.error ? errorText(m.message.error, lang) : t(m.message.key);
    toast.dataset.code = m.message.error ? m.message.error.code : m.message.key;
  }
}

function renderOrder(root, m) {
  const { state, t, lang } = m;
  const section = $(root, "order");
  show(section, !!state.table);
  const order = state.order;
  // Split bill: a line paid (已付) or being paid as someone's share is marked.
  const marks = (m.split.summary && m.split.summary.lines) || {};
  if (!changed(section, [lang, order, marks])) return;
  show($(root, "no-order"), !order);
  $(root, "order-lines").replaceChildren(...(order ? order.items : []).map((line) =>
    el("li", { "data-testid": "order-line", "data-sku": line.sku, "data-line": line.line_id,
      "data-share": marks[line.line_id] || null },
    el("span", { class: "name", text: line.name },
      line.source === "h5" ? el("span", { class: "tag", text: t("source_h5") }) : null,
      marks[line.line_id] ? el("span", { class: "tag mark", "data-testid": "line-mark", "data-state": marks[line.line_id],
        text: lineMark(t, marks[line.line_id]) }) : null),
    el("span", { class: "qty", text: `${t("qty")}${line.qty}` }),
    el("span", { class: "price", text: money(line.qty * line.unit_price_cents) }))));
  const total = $(root, "total");
  total.textContent = money(order ? order.total_cents : 0);
  total.dataset.cents = String(order ? order.total_cents : 0);
  section.dataset.version = order ? String(order.version) : "";
  section.dataset.status = order ? order.status : "";
}

function renderMenu(root, m) {
  const { state, view, t, lang, cart } = m;
  const section = $(root, "menu");
  show(section, !!state.table && !m.fatal);
  const error = $(root, "menu-error");
  show(error, !!m.menuError);
  if (m.menuError) error.textContent = t("menu_unavailable");
  const items = m.menu || [];
  if (!changed(section, [lang, items, cart, view.canAdd])) return;
  $(root, "menu-items").replaceChildren(...items.map((dish) => {
    const n = cart[dish.sku] || 0;
    return el("li", { "data-testid": `menu-item-${dish.sku}`, "data-sku": dish.sku },
      el("span", { class: "name", text: dish.name }),
      el("span", { class: "price", text: money(dish.unit_price_cents) }),
      el("span", { class: "stepper" },
        n > 0 ? el("button", { type: "button", class: "minus", "data-action": "less", "data-sku": dish.sku,
          "data-testid": `less-${dish.sku}`, "aria-label": t("remove"), text: "−" }) : null,
        n > 0 ? el("span", { class: "n", text: String(n) }) : null,
        el("button", { type: "button", "data-action": "more", "data-sku": dish.sku, "data-testid": `add-${dish.sku}`,
          "aria-label": t("add"), disabled: !view.canAdd, text: "+" })));
  }));
}

function renderBar(root, m) {
  const { state, view, t, cart, busy } = m;
  show($(root, "bar"), !!state.table && !m.fatal);
  const count = Object.values(cart).reduce((a, b) => a + b, 0);
  $(root, "cart-count").textContent = count ? t("cart_count", count) : t("cart_empty");
  const submit = $(root, "submit-items");
  submit.textContent = busy === "items" ? t("submitting") : t("submit_items");
  submit.disabled = !count || !view.canAdd || !!busy;
  const pay = $(root, "pay-button");
  const summary = m.split.summary;
  const rest = view.payRest && summary ? summary.rest : null;
  pay.textContent = busy === "checkout" ? t("checking_out")
    : rest !== null && state.order.status === "open" ? t("pay_rest", money(rest))
      : state.order && state.order.status === "open" ? t("pay_amount", money(state.order.total_cents)) : t("pay");
  pay.disabled = !view.canPay || !!busy || rest === 0;
  pay.dataset.mode = rest !== null ? "rest" : "whole";
  // Split bill (SPEC §10): pay a share of my own, beside the whole-order button.
  const split = $(root, "split-button");
  split.disabled = !view.canPay || !!busy || (!!summary && summary.split && summary.rest === 0);
}

function renderSheets(root, m) {
  const { state, view, t, busy } = m;
  const payment = state.payment;
  show($(root, "pay-panel"), !!payment);
  if (payment) renderPayPanel(root, m, payment);
  renderResult(root, m);
  const lost = $(root, "lost-panel");
  show(lost, !!state.lost && !payment);
  lost.dataset.reason = state.lost || "";
  $(root, "lost-title").textContent = state.lost === "forced" ? t("lost_forced_title") : t("lost_expired_title");
  show($(root, "frontdesk"), !!m.frontdesk);
  const paid = state.payResult && state.payResult.kind === "paid";
  show($(root, "paid-screen"), paid || (!!state.paidByMe && !!state.order && state.order.status === "paid"));
  if (paid) $(root, "paid-amount").textContent = money(state.payResult.amount_cents);
  else if (state.paidByMe && state.order) $(root, "paid-amount").textContent = money(state.order.total_cents);
}

function renderPayPanel(root, m, payment) {
  const { view, t, busy } = m;
  const panel = $(root, "pay-panel");
  panel.dataset.phase = payment.phase;
  const claimed = payment.phase === "confirm" || payment.phase === "starting";
  $(root, "pay-title").textContent = !claimed ? t("waiting_title") : payment.share ? t("paying_share_title") : t("paying_title");
  panel.dataset.share = payment.share ? payment.share.kind : "";
  $(root, "pay-amount").textContent = money(payment.amount_cents);
  const seconds = claimed ? view.secondsLeft : view.waitingSeconds;
  const countdown = $(root, "countdown");
  countdown.textContent = seconds === null ? "" : claimed ? t("countdown", seconds) : t("waiting_countdown", seconds);
  countdown.dataset.seconds = String(seconds);
  show($(root, "providers"), claimed);
  for (const button of root.querySelectorAll("[data-provider]")) {
    button.disabled = payment.phase !== "confirm" || busy === "pay";
    button.textContent = payment.phase === "starting" && payment.provider === button.dataset.provider
      ? t("starting_pay") : t(`provider_${button.dataset.provider}`);
  }
  const waiting = $(root, "waiting");
  show(waiting, !claimed);
  waiting.textContent = payment.phase === "completing" ? t("completing") : t("waiting");
  show($(root, "reopen-pay"), payment.phase === "in_flight" && !!payment.pay_url);
  $(root, "pay-hint").textContent = claimed ? t("pay_hint") : t("waiting_hint");
  const cancel = $(root, "cancel-pay");
  show(cancel, payment.phase !== "completing");
  cancel.disabled = payment.phase === "starting" || busy === "pay";
}

function renderResult(root, m) {
  const { state, t } = m;
  const r = state.payResult;
  const panel = $(root, "result-panel");
  show(panel, !!r && r.kind !== "paid");
  if (!r || r.kind === "paid") return;
  panel.dataset.kind = r.kind;
  panel.dataset.refund = r.refund_state || "";
  let title = t("result_failed_title");
  let body = t("result_failed_body");
  if (r.kind === "share_paid") {
    title = t("share_paid_title");
    body = t("share_paid_body");
  } else if (r.kind === "unknown") {
    title = t("result_unknown_title");
    body = t("result_unknown_body");
  } else if (r.kind === "surplus") {
    title = r.refund_state === "succeeded" ? t("result_refunded_title")
      : r.refund_state === "manual" || r.refund_state === "failed" ? t("result_refund_manual_title")
        : t("result_refunding_title");
    body = r.refund_state === "failed" ? t("result_refund_failed_body") : t("result_surplus_body");
  }
  $(root, "result-title").textContent = title;
  $(root, "result-body").textContent = body;
  $(root, "result-amount").textContent = r.amount_cents ? money(r.amount_cents) : "";
  show($(root, "retry-pay"), r.kind === "failed");
}
