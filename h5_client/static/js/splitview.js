// Drawing the split bill (SPEC §10): the table's summary under the order ("已付 2 份 · ¥x,待付 ¥y"),
// and the split sheet where the diner picks dishes, "AA N 人" and a part, an amount, or the rest.
// Parts are redrawn only when what they show changed, so a checkbox under the diner's finger and
// the amount being typed are never replaced by the 250 ms countdown tick.

import { money } from "./i18n.js";
import { lineAmounts, MAX_PARTS, MIN_PARTS, partAmount, pickedShare } from "./split.js";
import { $, changed, el, show } from "./dom.js";

const MODES = ["lines", "parts", "amount", "rest"];

/** The mark of an order line paid or being paid as someone's share ("" when free). */
export function lineMark(t, how) {
  return how ? t(`mark_${how}`) : "";
}

/** Draw the table's split summary (`m.split.summary`) under the order's total. */
export function renderSplitSummary(root, m) {
  const { t, lang } = m;
  const summary = m.split.summary;
  const box = $(root, "split-summary");
  const visible = !!summary && summary.split;
  show(box, visible);
  if (!visible || !changed(box, [lang, summary])) return;
  box.dataset.paid = String(summary.paid);
  box.dataset.remaining = String(summary.remaining);
  box.dataset.full = summary.full ? "1" : "0";
  const rows = [el("div", { "data-testid": "split-status", class: summary.full ? "full" : "",
    text: summary.full ? t("split_full", money(summary.total)) : summary.paidCount
      ? t("split_summary", summary.paidCount, money(summary.paid), money(summary.remaining))
      : t("split_due_all", money(summary.remaining)) })];
  if (!summary.full && summary.claimed) rows.push(el("small", { text: t("split_claimed", money(summary.claimed)) }));
  if (summary.partsN) {
    const parts = [];
    for (let k = 1; k <= summary.partsN; k += 1) {
      const how = summary.parts[k] || "free";
      parts.push(el("span", { class: "part", "data-testid": `split-summary-part-${k}`, "data-state": how,
        text: `${t("split_part", k)}${how === "free" ? "" : ` ${t(`mark_${how}`)}`}` }));
    }
    rows.push(el("div", { class: "parts" }, el("span", { text: t("split_parts_people", summary.partsN) }), ...parts));
  }
  box.replaceChildren(...rows);
}

/** Draw the split sheet for `m.split` = {summary, pick} (hidden while no pick is open). */
export function renderSplitPanel(root, m) {
  const { state, t, busy } = m;
  const { summary, pick } = m.split;
  const panel = $(root, "split-panel");
  const open = !!pick && !!summary && !state.payment;
  show(panel, open);
  if (!open) return;
  panel.dataset.mode = pick.mode;
  for (const mode of MODES) {
    const tab = $(root, `split-mode-${mode}`);
    tab.setAttribute("aria-pressed", String(pick.mode === mode));
  }
  $(root, "split-hint").textContent = pick.mode === "parts" && summary.partsN
    ? t("split_parts_fixed", summary.partsN) : t(`split_${pick.mode}_hint`);
  show($(root, "split-lines"), pick.mode === "lines");
  show($(root, "split-parts"), pick.mode === "parts");
  show($(root, "split-amount-box"), pick.mode === "amount");
  show($(root, "split-rest"), pick.mode === "rest");
  if (pick.mode === "lines") renderLines(root, m);
  if (pick.mode === "parts") renderParts(root, m);
  if (pick.mode === "amount") $(root, "split-due").textContent = t("split_due", money(summary.rest));
  $(root, "split-rest").textContent = money(summary.rest);
  const picked = pickedShare(pick, state.order, summary);
  const pay = $(root, "split-pay");
  pay.textContent = busy === "checkout" ? t("checking_out") : picked ? t("split_pay", money(picked.amount_cents)) : t("split_pick_first");
  pay.disabled = !picked || !!busy;
  pay.dataset.cents = picked ? String(picked.amount_cents) : "";
}

function renderLines(root, m) {
  const { state, t, lang } = m;
  const { summary, pick } = m.split;
  const list = $(root, "split-lines");
  const order = state.order;
  if (!changed(list, [lang, order, summary.lines, pick.lines])) return;
  const amounts = lineAmounts(order);
  list.replaceChildren(...order.items.map((line) => {
    const how = summary.lines[line.line_id] || "free";
    const box = el("input", { type: "checkbox", "data-split": "line", "data-line": line.line_id,
      "data-testid": `split-check-${line.line_id}`, disabled: how !== "free" });
    box.checked = how === "free" && pick.lines.includes(line.line_id);
    return el("li", { "data-testid": "split-line", "data-line": line.line_id, "data-state": how },
      el("label", {}, box, el("span", { class: "name", text: `${line.name} ${t("qty")}${line.qty}` })),
      how === "free" ? null : el("span", { class: "mark", "data-state": how, text: lineMark(t, how) }),
      el("span", { class: "price", text: money(amounts[line.line_id]) }));
  }));
}

function renderParts(root, m) {
  const { t, lang } = m;
  const { summary, pick } = m.split;
  const n = summary.partsN || pick.parts;
  $(root, "split-people").textContent = t("split_parts_people", n);
  $(root, "split-people").dataset.parts = String(n);
  for (const [id, label, limit] of [["split-fewer", "split_fewer", n <= MIN_PARTS], ["split-more", "split_more", n >= MAX_PARTS]]) {
    const button = $(root, id);
    button.disabled = !!summary.partsN || limit;
    button.setAttribute("aria-label", t(label));
  }
  const grid = $(root, "split-part-list");
  if (!changed(grid, [lang, n, summary.total, summary.parts, pick.part])) return;
  const buttons = [];
  for (let k = 1; k <= n; k += 1) {
    const how = summary.parts[k] || "free";
    buttons.push(el("button", { type: "button", class: "part", "data-split": "part", "data-part": String(k),
      "data-testid": `split-part-${k}`, "data-state": how, "aria-pressed": String(pick.part === k),
      disabled: how !== "free" },
    el("span", { text: t("split_part", k) }),
    el("span", { class: "price", text: money(partAmount(summary.total, n, k)) }),
    how === "free" ? null : el("small", { text: t(`mark_${how}`) })));
  }
  grid.replaceChildren(...buttons);
}
