// Split bill (SPEC §10) as the diner's page sees it, as pure functions: no DOM, no network, `now`
// passed in. What the table has paid and claimed comes from the order (`paid_cents`, `shares`: no
// payer named) and the live payment locks carrying a `share` (held by me or by someone else).
// The amounts mirror coordinator/core/shares.py, so the page shows what the coordinator will charge:
//   lines  each line's qty * unit price plus the adjustments bound to it (order-wide ones go to
//          parts, amounts and the rest)
//   parts  total // N each, the last part takes the rounding; one N per order
//   rest   total − paid − claimed by live shares

import { liveLocks } from "./state.js";

export const MIN_PARTS = 2;
export const MAX_PARTS = 50;

/** line_id → what paying that line costs (qty * unit price + its own adjustments). */
export function lineAmounts(order) {
  const out = {};
  for (const item of (order && order.items) || []) out[item.line_id] = item.qty * item.unit_price_cents;
  for (const adj of (order && order.adjustments) || []) {
    if (adj.line_id && adj.line_id in out) out[adj.line_id] += adj.amount_cents;
  }
  return out;
}

/** One of `parts` equal parts of `total`; the last part takes the rounding. */
export function partAmount(total, parts, part) {
  const each = Math.floor(total / parts);
  return part === parts ? total - each * (parts - 1) : each;
}

/** The request body's `share` for a share as the coordinator describes it (a lock's or a paid one). */
export function specOf(share) {
  switch (share && share.kind) {
    case "lines":
      return { lines: [...share.line_ids] };
    case "parts":
      return { parts: share.parts, part: share.part };
    case "amount":
      return { amount_cents: share.amount_cents };
    case "rest":
      return { rest: true };
    default:
      return null;
  }
}

/**
 * The table's split of the shown order: {total, paid, paidCount, remaining, claimed, rest,
 * lines: {line_id: "paid" | "mine" | "taken"}, parts: {k: same}, partsN, split, full, live}.
 * `split` is true once anything is paid or claimed as a share; `full` once the shares reached the
 * total (or the order is paid).
 */
export function splitSummary(state, now) {
  const order = state.order;
  if (!order) return null;
  const total = order.total_cents;
  const paid = order.paid_cents || 0;
  const shares = order.shares || [];
  const lines = {};
  const parts = {};
  let partsN = null;
  const mark = (share, how) => {
    for (const id of share.line_ids || []) lines[id] = lines[id] === "paid" ? "paid" : how;
    if (share.kind === "parts") {
      partsN = share.parts;
      parts[share.part] = parts[share.part] === "paid" ? "paid" : how;
    }
  };
  for (const share of shares) mark(share, "paid");
  const open = order.status === "open" && !state.closed;
  const live = open ? liveLocks(state, now).filter((l) => l.kind === "payment" && l.share) : [];
  let claimed = 0;
  for (const lock of live) {
    mark(lock.share, lock.holder && lock.holder.is_me ? "mine" : "taken");
    claimed += lock.share.amount_cents || 0;
  }
  const remaining = Math.max(0, total - paid);
  return {
    total, paid, paidCount: shares.length, remaining, claimed,
    rest: Math.max(0, remaining - claimed), lines, parts, partsN,
    live: live.length, split: paid > 0 || live.length > 0,
    full: order.status === "paid" || (paid > 0 && paid >= total),
  };
}

/**
 * What the diner's pick in the split sheet costs and the `share` to claim for it, or null when
 * nothing payable is picked. `pick` = {mode: "lines" | "parts" | "amount" | "rest", lines: [ids],
 * parts: N, part: k, amount: "12.50" (yuan as typed)}.
 */
export function pickedShare(pick, order, summary) {
  if (!pick || !order || !summary) return null;
  switch (pick.mode) {
    case "lines": {
      const amounts = lineAmounts(order);
      const ids = pick.lines.filter((id) => id in amounts && !summary.lines[id]);
      if (!ids.length) return null;
      return { share: { lines: ids }, amount_cents: ids.reduce((sum, id) => sum + amounts[id], 0) };
    }
    case "parts": {
      const n = summary.partsN || pick.parts;
      if (!pick.part || pick.part > n || summary.parts[pick.part]) return null;
      return { share: { parts: n, part: pick.part }, amount_cents: partAmount(summary.total, n, pick.part) };
    }
    case "amount": {
      const cents = yuanToCents(pick.amount);
      return cents ? { share: { amount_cents: cents }, amount_cents: cents } : null;
    }
    case "rest":
      return summary.rest > 0 ? { share: { rest: true }, amount_cents: summary.rest } : null;
    default:
      return null;
  }
}

/** "12.5" → 1250 cents; null for anything that is not a positive amount with at most 2 decimals. */
export function yuanToCents(text) {
  const match = /^\s*(\d{1,9})(?:\.(\d{1,2}))?\s*$/.exec(String(text || ""));
  if (!match) return null;
  const cents = Number(match[1]) * 100 + Number((match[2] || "").padEnd(2, "0"));
  return cents > 0 ? cents : null;
}

/** A fresh pick for the split sheet: equal parts preset to the table's N when others chose one. */
export function newPick(summary) {
  return { mode: "lines", lines: [], parts: (summary && summary.partsN) || MIN_PARTS, part: null, amount: "" };
}

/**
 * The pick after one action in the split sheet: {kind: "mode", mode} | {kind: "line", id} |
 * {kind: "fewer"} | {kind: "more"} | {kind: "part", part} | {kind: "amount", text}.
 * The number of people is the table's once someone chose it (every parts share uses one N).
 */
export function pickAction(pick, action, summary) {
  const fixed = summary && summary.partsN;
  switch (action.kind) {
    case "mode":
      return { ...pick, mode: action.mode };
    case "line": {
      const has = pick.lines.includes(action.id);
      return { ...pick, lines: has ? pick.lines.filter((id) => id !== action.id) : [...pick.lines, action.id] };
    }
    case "fewer":
    case "more": {
      if (fixed) return { ...pick, parts: fixed };
      const parts = Math.max(MIN_PARTS, Math.min(MAX_PARTS, pick.parts + (action.kind === "more" ? 1 : -1)));
      return { ...pick, parts, part: pick.part && pick.part <= parts ? pick.part : null };
    }
    case "part":
      return { ...pick, parts: fixed || pick.parts, part: action.part };
    case "amount":
      return { ...pick, amount: action.text };
    default:
      return pick;
  }
}

/**
 * One step of the split sheet from the element the diner used (its data-split / data-testid,
 * and its value for the amount): {pick} to redraw, or {pick, pay: share} to check out.
 */
export function splitStep(pick, data, value, summary, order) {
  if (data.testid === "split-button") return { pick: newPick(summary) };
  if (data.testid === "split-close" || !pick) return { pick: null };
  if (data.testid === "split-pay") {
    const picked = pickedShare(pick, order, summary);
    return { pick, pay: picked ? picked.share : null };
  }
  const action = { kind: data.split, mode: data.mode, id: data.line, part: Number(data.part), text: value };
  return { pick: pickAction(pick, action, summary) };
}
