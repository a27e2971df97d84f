// Reconciliation (SPEC §5): the orders that need a human look — a lock forced while a payment was
// under way, a refused payment completion, an amount or version mismatch — each with its trail.

import { storePath } from "./api.js";
import { localInputMs } from "./format.js";
import { entryTable } from "./audit.js";
import { el } from "./dom.js";

export function mount(ctx, root) {
  const { api, t, storeId } = ctx;
  const path = storePath(storeId, "reconciliation");
  let stopped = false;

  const fromInput = el("input", { type: "datetime-local", step: 1, testid: "recon-from", name: "from" });
  const toInput = el("input", { type: "datetime-local", step: 1, testid: "recon-to", name: "to" });
  const error = el("p", { class: "field-error", testid: "recon-error", hidden: true });
  const form = el("form", { class: "card filters", testid: "recon-filters", novalidate: true },
    el("label", {}, el("span", { text: t("filter_from") }), fromInput),
    el("label", {}, el("span", { text: t("filter_to") }), toInput),
    el("div", { class: "filter-actions" },
      el("button", { type: "submit", class: "primary", testid: "recon-refresh", text: t("refresh") })),
    error);
  const list = el("div", { class: "cases", testid: "recon-list" });
  root.append(el("h2", { text: t("recon_title") }), el("p", { class: "muted", text: t("recon_intro") }), form, list);

  function caseCard(item) {
    return el("article", { class: "card case", testid: "recon-case", dataset: { orderId: item.order_id } },
      el("header", {},
        el("h3", { testid: "recon-case-title", text: t("recon_case", item.order_id, item.table_id) }),
        el("div", { class: "reasons" }, item.reasons.map((reason) =>
          el("span", { class: "badge danger", testid: "recon-reason", dataset: { reason }, text: t(`reason_${reason}`) }))),
        el("a", { class: "button ghost small", testid: "recon-open-audit", href: ctx.href(storeId, "audit", { order_id: item.order_id }),
          text: t("open_in_audit") })),
      el("h4", { text: t("trail") }),
      entryTable(item.trail, t, "recon-trail", "trail-row"));
  }

  async function load() {
    const from = localInputMs(fromInput.value);
    const to = localInputMs(toInput.value);
    if (from !== null && to !== null && from > to) {
      error.textContent = t("window_invalid");
      error.hidden = false;
      return;
    }
    error.hidden = true;
    list.dataset.state = "loading";
    const report = await api.get(path, { from, to });
    if (stopped) return;
    list.replaceChildren(...(report.cases.length === 0
      ? [el("p", { class: "empty card", testid: "recon-empty", text: t("recon_empty") })]
      : report.cases.map(caseCard)));
    list.dataset.state = "ready";
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    load().catch(ctx.fail);
  });

  load().catch(ctx.fail);
  return () => {
    stopped = true;
  };
}
