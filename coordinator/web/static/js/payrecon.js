// 支付对账 (SPEC §9): surplus payments with their refund states, "paid, ERP not yet confirmed",
// the per-day summary by provider (orders paid vs money received) with a chart, and a CSV export.
// The chart is inline SVG built with DOM APIs (classes only: the CSP forbids style attributes);
// the export is fetched with the bearer token and handed to the browser as a blob URL.

import { storePath } from "./api.js";
import { dateTime, localInputMs } from "./format.js";
import { el, table } from "./dom.js";

const SVG = "http://www.w3.org/2000/svg";
const DAY_MS = 86_400_000;

function money(cents) {
  return `¥${(Number(cents || 0) / 100).toFixed(2)}`;
}

function svg(tag, attrs = {}, text = null) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  if (text !== null) node.textContent = text;
  return node;
}

/** The bars of the chart: one group per (day, provider), pure for testing. */
export function chartBars(days) {
  const max = Math.max(1, ...days.map((d) => Math.max(d.received_cents, d.paid_cents, d.surplus_cents)));
  return days.map((d) => ({
    label: `${d.day.slice(5)} ${d.provider === "wechatpay" ? "WX" : d.provider === "alipay" ? "ALI" : d.provider}`,
    day: d.day,
    provider: d.provider,
    series: [
      ["paid", d.paid_cents], ["received", d.received_cents], ["surplus", d.surplus_cents],
    ].map(([name, cents]) => ({ name, cents, ratio: cents / max })),
  }));
}

/** An inline-SVG grouped bar chart of the summary days. */
export function chart(days, t) {
  const bars = chartBars(days);
  const height = 180;
  const group = 54;
  const width = Math.max(320, 40 + bars.length * group);
  const root = svg("svg", { viewBox: `0 0 ${width} ${height + 40}`, width, height: height + 40, role: "img",
    "aria-label": t("pay_chart_title"), class: "paychart", "data-testid": "pay-chart" });
  root.append(svg("line", { x1: 30, y1: height, x2: width - 4, y2: height, class: "axis" }));
  bars.forEach((bar, i) => {
    const x0 = 36 + i * group;
    bar.series.forEach((s, j) => {
      const h = Math.round(s.ratio * (height - 10));
      const rect = svg("rect", { x: x0 + j * 14, y: height - h, width: 12, height: Math.max(h, 0),
        class: `bar bar-${s.name}`, "data-testid": "pay-chart-bar", "data-series": s.name, "data-cents": s.cents,
        "data-day": bar.day, "data-provider": bar.provider });
      rect.append(svg("title", {}, `${bar.day} ${bar.provider} ${t(`pay_series_${s.name}`)} ${money(s.cents)}`));
      root.append(rect);
    });
    root.append(svg("text", { x: x0, y: height + 16, class: "tick" }, bar.label));
  });
  const legend = ["paid", "received", "surplus"].map((name, j) => [
    svg("rect", { x: 36 + j * 110, y: height + 26, width: 10, height: 10, class: `bar bar-${name}` }),
    svg("text", { x: 50 + j * 110, y: height + 35, class: "legend" }, t(`pay_series_${name}`)),
  ]).flat();
  root.append(...legend);
  return root;
}

function refundBadge(state, t) {
  const kind = state === "succeeded" ? "ok" : state === "failed" || state === "manual" ? "danger" : "warn";
  return el("span", { class: `badge ${kind}`, testid: "pay-refund-state", dataset: { state: state || "" },
    text: t(`refund_${state || "none"}`) });
}

function reasonText(reason, t) {
  const key = `surplus_${String(reason).split(":")[0]}`;
  const text = t(key);
  return text === key ? reason : `${text}${reason.includes(":") ? ` (${reason.split(":")[1]})` : ""}`;
}

function caseRow(item, t, withRefund) {
  const p = item.payment;
  return el("tr", { testid: withRefund ? "pay-surplus-row" : "pay-unconfirmed-row", dataset: { trade: p.out_trade_no } },
    el("td", { text: dateTime(p.paid_at || p.created_at) }),
    el("td", { text: t(`provider_${p.provider}`) }),
    el("td", { text: `${p.order_id || "-"} · ${p.table_id || "-"}` }),
    el("td", { class: "num", text: money(p.received_cents) }),
    el("td", { text: withRefund ? reasonText(item.reason, t) : t("paid_erp_unconfirmed") }),
    el("td", {}, withRefund ? refundBadge(p.refund_state, t) : el("span", { text: String(p.erp_attempts || 0) })),
    el("td", { class: "mono", text: p.out_trade_no }));
}

export function mount(ctx, root) {
  const { api, t, storeId } = ctx;
  let stopped = false;
  let blobUrl = null;
  const fromInput = el("input", { type: "datetime-local", step: 1, testid: "payrecon-from", name: "from" });
  const toInput = el("input", { type: "datetime-local", step: 1, testid: "payrecon-to", name: "to" });
  const exportLink = el("a", { class: "button ghost", testid: "pay-export", href: "#", text: t("pay_export") });
  const form = el("form", { class: "card filters", testid: "payrecon-filters", novalidate: true },
    el("label", {}, el("span", { text: t("filter_from") }), fromInput),
    el("label", {}, el("span", { text: t("filter_to") }), toInput),
    el("div", { class: "filter-actions" },
      el("button", { type: "submit", class: "primary", testid: "payrecon-refresh", text: t("refresh") }), exportLink));
  const surplus = el("div", { testid: "pay-surplus" });
  const unconfirmed = el("div", { testid: "pay-unconfirmed" });
  const summary = el("div", { testid: "pay-summary" });
  root.append(el("h2", { text: t("payrecon_title") }), el("p", { class: "muted", text: t("payrecon_intro") }), form,
    el("section", { class: "card" }, el("h3", { text: t("pay_surplus_title") }), surplus),
    el("section", { class: "card" }, el("h3", { text: t("pay_unconfirmed_title") }), unconfirmed),
    el("section", { class: "card" }, el("h3", { text: t("pay_summary_title") }), summary));

  const headers = () => [t("col_time"), t("col_provider"), t("col_order"), t("col_amount"), t("col_reason"),
    t("col_refund"), t("col_trade")];

  function window(defaultMs) {
    const to = localInputMs(toInput.value);
    const from = localInputMs(fromInput.value);
    return { from: from ?? (to === null ? null : to - defaultMs), to };
  }

  async function load() {
    const query = window(DAY_MS);
    const [recon, sums] = await Promise.all([
      api.get(storePath(storeId, "payments", "reconciliation"), query),
      api.get(storePath(storeId, "payments", "summary"), { ...window(31 * DAY_MS),
        utc_offset_minutes: -new Date().getTimezoneOffset() }),
    ]);
    if (stopped) return;
    surplus.replaceChildren(recon.surplus.length
      ? table("pay-surplus-table", headers(), recon.surplus.map((c) => caseRow(c, t, true)))
      : el("p", { class: "empty", testid: "pay-surplus-empty", text: t("pay_none") }));
    const unconfirmedHeaders = headers();
    unconfirmedHeaders[5] = t("col_attempts");
    unconfirmed.replaceChildren(recon.unconfirmed.length
      ? table("pay-unconfirmed-table", unconfirmedHeaders, recon.unconfirmed.map((c) => caseRow(c, t, false)))
      : el("p", { class: "empty", testid: "pay-unconfirmed-empty", text: t("pay_none") }));
    const days = sums.days;
    summary.replaceChildren(...(days.length ? [
      chart(days, t),
      table("pay-summary-table", [t("col_day"), t("col_provider"), t("col_orders_paid"), t("pay_series_paid"),
        t("pay_series_received"), t("pay_series_surplus"), t("col_refunded"), t("col_unconfirmed")],
      days.map((d) => el("tr", { testid: "pay-summary-row", dataset: { day: d.day, provider: d.provider } },
        el("td", { text: d.day }), el("td", { text: t(`provider_${d.provider}`) }),
        el("td", { class: "num", text: String(d.orders_paid) }), el("td", { class: "num", text: money(d.paid_cents) }),
        el("td", { class: "num", text: money(d.received_cents) }),
        el("td", { class: "num", text: `${money(d.surplus_cents)} (${d.surplus_count})` }),
        el("td", { class: "num", text: money(d.refunded_cents) }),
        el("td", { class: "num", text: money(d.unconfirmed_cents) })))),
    ] : [el("p", { class: "empty", testid: "pay-summary-empty", text: t("pay_none") })]));
    root.dataset.ready = "1";
  }

  async function download() {
    const query = window(31 * DAY_MS);
    const params = new URLSearchParams(Object.entries(query).filter(([, v]) => v !== null).map(([k, v]) => [k, String(v)]));
    const qs = params.toString();
    const blob = await api.blob(storePath(storeId, "payments", "export.csv") + (qs ? `?${qs}` : ""));
    if (blobUrl) URL.revokeObjectURL(blobUrl);
    blobUrl = URL.createObjectURL(blob);
    const a = el("a", { href: blobUrl, download: `payments-${storeId}.csv`, hidden: true });
    document.body.append(a);
    a.click();
    a.remove();
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    load().catch(ctx.fail);
  });
  exportLink.addEventListener("click", (event) => {
    event.preventDefault();
    download().catch(ctx.fail);
  });
  load().catch(ctx.fail);
  const timer = setInterval(() => load().catch(() => {}), 5000); // refund states move on by themselves
  return () => {
    stopped = true;
    clearInterval(timer);
    if (blobUrl) URL.revokeObjectURL(blobUrl);
  };
}
