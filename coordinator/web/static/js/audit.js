// The audit log: filter by order, lock kind and time window; pages follow the server's `next`
// cursor forwards, and a stack of the cursors used so far goes back.

import { storePath } from "./api.js";
import { actorName, dateTime, eventName, localInputMs, preciseTime, summary } from "./format.js";
import { el, table } from "./dom.js";

const PAGE_SIZE = 50;

/** One audit entry as a table row (shared with the reconciliation trails). */
export function entryRow(entry, t, testid = "audit-row") {
  return el("tr", { testid, dataset: { name: entry.name, orderId: entry.order_id || "", id: entry.id } },
    el("td", { class: "nowrap", title: dateTime(entry.ts) }, el("div", { text: dateTime(entry.ts).slice(0, 10) }),
      el("div", { class: "mono", text: preciseTime(entry.ts) })),
    el("td", {}, el("div", { testid: "entry-event", text: eventName(entry.name, t) }),
      el("small", { class: "mono muted", text: entry.name })),
    el("td", { class: "mono", text: entry.order_id || "" }),
    el("td", { class: "mono", text: entry.table_id || "" }),
    el("td", { testid: "entry-actor", text: actorName(entry.actor, t) }),
    el("td", {}, el("div", { testid: "entry-summary", text: summary(entry, t) }),
      el("details", {}, el("summary", { text: t("raw") }),
        el("pre", { text: JSON.stringify({ actor: entry.actor, data: entry.data }, null, 2) }))));
}

export function entryTable(entries, t, testid, rowTestid) {
  return table(testid, [t("time"), t("event"), t("order"), t("table"), t("actor"), t("details")],
    entries.map((entry) => entryRow(entry, t, rowTestid)));
}

export function mount(ctx, root) {
  const { api, t, storeId } = ctx;
  const path = storePath(storeId, "audit");
  const initial = ctx.params || {};
  let cursors = [null]; // the `after` of each page shown so far; the last is the current page
  let next = null;
  let stopped = false;

  const orderInput = el("input", { testid: "audit-order", name: "order_id", autocomplete: "off", value: initial.order_id || "" });
  const kindSelect = el("select", { testid: "audit-kind", name: "kind" },
    el("option", { value: "", text: t("filter_all") }),
    ["order", "presettle", "payment"].map((k) => el("option", { value: k, text: t(`kind_${k}`) })));
  const fromInput = el("input", { type: "datetime-local", step: 1, testid: "audit-from", name: "from" });
  const toInput = el("input", { type: "datetime-local", step: 1, testid: "audit-to", name: "to" });
  const filterError = el("p", { class: "field-error", testid: "audit-error", hidden: true });
  const form = el("form", { class: "card filters", testid: "audit-filters", novalidate: true },
    el("label", {}, el("span", { text: t("filter_order") }), orderInput),
    el("label", {}, el("span", { text: t("filter_kind") }), kindSelect),
    el("label", {}, el("span", { text: t("filter_from") }), fromInput),
    el("label", {}, el("span", { text: t("filter_to") }), toInput),
    el("div", { class: "filter-actions" },
      el("button", { type: "submit", class: "primary", testid: "audit-search", text: t("search") }),
      el("button", { type: "button", class: "ghost", testid: "audit-clear", text: t("clear"), on: { click: clearFilters } })),
    filterError);
  const list = el("div", { testid: "audit-list" });
  const prev = el("button", { type: "button", class: "ghost", testid: "audit-prev", text: t("prev_page"), disabled: true });
  const nextButton = el("button", { type: "button", class: "ghost", testid: "audit-next", text: t("next_page"), disabled: true });
  const pageNo = el("span", { class: "muted", testid: "audit-page" });
  root.append(el("h2", { text: t("audit_title") }), el("p", { class: "muted", text: t("audit_intro") }), form,
    el("div", { class: "card" }, el("div", { class: "pager" }, prev, pageNo, nextButton), list));

  function filters() {
    return {
      order_id: orderInput.value.trim(), kind: kindSelect.value,
      from: localInputMs(fromInput.value), to: localInputMs(toInput.value), limit: PAGE_SIZE,
    };
  }

  async function show(after) {
    const query = filters();
    if (query.from !== null && query.to !== null && query.from > query.to) {
      filterError.textContent = t("window_invalid");
      filterError.hidden = false;
      return false;
    }
    filterError.hidden = true;
    list.dataset.state = "loading";
    let page;
    try {
      page = await api.get(path, { ...query, after });
    } catch (e) {
      list.dataset.state = "error";
      if (e.status === 400 && e.details.length) {
        filterError.textContent = e.details.map((d) => `${(d.loc || []).join(".")}: ${d.msg}`).join("; ");
        filterError.hidden = false;
        return false;
      }
      ctx.fail(e);
      return false;
    }
    if (stopped) return false;
    next = page.next;
    list.replaceChildren(page.entries.length === 0
      ? el("p", { class: "empty", testid: "audit-empty", text: t("audit_empty") })
      : entryTable(page.entries, t, "audit-table", "audit-row"));
    list.dataset.state = "ready";
    return true;
  }

  function updatePager() {
    prev.disabled = cursors.length <= 1;
    nextButton.disabled = !next;
    pageNo.textContent = t("page_n", cursors.length);
  }

  async function first() {
    cursors = [null];
    await show(null);
    updatePager();
  }

  function clearFilters() {
    form.reset();
    orderInput.value = "";
    first();
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    first();
  });
  nextButton.addEventListener("click", async () => {
    if (!next) return;
    const after = next;
    if (await show(after)) cursors.push(after);
    updatePager();
  });
  prev.addEventListener("click", async () => {
    if (cursors.length <= 1) return;
    const back = cursors[cursors.length - 2];
    if (await show(back)) cursors.pop();
    updatePager();
  });

  first();
  return () => {
    stopped = true;
  };
}
