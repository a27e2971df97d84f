// The live lock board: every active lock of the store with its kind, order, table, holder, whether
// the holder is online, and a countdown to expires_at.
//
// The coordinator's websocket serves terminals and diners only (an admin token is closed with
// 4403), so the board polls GET .../locks every POLL_MS. The countdown runs on the coordinator's
// clock: each answer carries `now` (Redis time), and the page keeps `server - local` from the
// midpoint of the request, so a browser whose clock is off still counts down right.

import { storePath } from "./api.js";
import { clockTime, holderName, kindName, money, remaining, shortId } from "./format.js";
import { el, table } from "./dom.js";

const POLL_MS = 1000;
const TICK_MS = 100;

export function mount(ctx, root) {
  const { api, t, storeId } = ctx;
  const path = storePath(storeId, "locks");
  let stopped = false;
  let timer = null;
  let offset = 0; // coordinator ms − performance-based local ms

  const localNow = () => performance.timeOrigin + performance.now();
  const serverNow = () => localNow() + offset;

  const status = el("p", { class: "live-note", testid: "board-status", dataset: { state: "loading" }, text: t("loading") });
  const body = el("div", { testid: "board" });
  root.append(el("h2", { text: t("board_title") }), el("p", { class: "muted", text: t("board_intro") }),
    el("div", { class: "card" }, status, body));

  function row(lock) {
    const holder = lock.holder || {};
    const erp = holder.role === "erp";
    const countdown = el("span", { class: "countdown", testid: "lock-countdown", dataset: { expiresAt: lock.expires_at } });
    return el("tr", {
      testid: "lock-row", class: `kind-${lock.kind}`,
      dataset: {
        orderId: lock.order_id, tableId: lock.table_id, kind: lock.kind, holderRole: holder.role || "",
        terminalId: erp ? holder.terminal_id : "", fence: lock.fence, expiresAt: lock.expires_at,
        acquiredAt: lock.acquired_at,
      },
    },
    el("td", {}, el("span", { class: `badge kind ${lock.kind}`, testid: "lock-kind", text: kindName(lock.kind, t) }),
      lock.completing ? el("span", { class: "badge warn", testid: "lock-completing", text: t("completing") }) : null,
      lock.share ? el("span", { class: "badge", testid: "lock-share", text: `${t("share")} ${money(lock.share.amount_cents)}` }) : null),
    el("td", { class: "mono", testid: "lock-order", text: lock.order_id }),
    el("td", { class: "mono", testid: "lock-table", text: lock.table_id }),
    el("td", { testid: "lock-holder" }, holderName(holder, t),
      el("small", { class: "mono muted" }, " ", erp ? holder.terminal_id : shortId(holder.session_id))),
    el("td", {}, erp
      ? el("span", { class: `dot ${holder.online ? "on" : "off"}`, testid: "lock-holder-online",
        dataset: { online: holder.online ? "1" : "0" }, text: holder.online ? t("online") : t("offline") })
      : el("span", { class: "muted", testid: "lock-holder-online", dataset: { online: "" }, text: "—" })),
    el("td", { class: "mono", text: lock.fence }),
    el("td", {}, countdown),
    el("td", { class: "muted", text: clockTime(lock.expires_at) }));
  }

  function tick() {
    const now = serverNow();
    for (const node of body.querySelectorAll("[data-expires-at].countdown")) {
      const left = Number(node.dataset.expiresAt) - now;
      node.textContent = remaining(left, t);
      node.closest("tr").classList.toggle("ended", left <= 0);
    }
  }

  function render(locks) {
    if (locks.length === 0) {
      body.replaceChildren(el("p", { class: "empty", testid: "board-empty", text: t("board_empty") }));
      return;
    }
    body.replaceChildren(table("board-table",
      [t("kind"), t("order"), t("table"), t("holder"), t("holder_online"), t("fence"), t("remaining"), t("expires_at")],
      locks.map(row)));
    tick();
  }

  async function poll() {
    const sent = localNow();
    try {
      const board = await api.request("GET", path);
      if (stopped) return;
      offset = board.now - (sent + localNow()) / 2;
      render(board.locks);
      status.dataset.state = "live";
      status.textContent = t("board_live", clockTime(board.now));
    } catch (e) {
      if (stopped) return;
      status.dataset.state = "error";
      status.textContent = t("board_error");
      if (e.status === 401 || e.status === 404) return ctx.fail(e);
    }
    timer = setTimeout(poll, POLL_MS);
  }

  const ticker = setInterval(tick, TICK_MS);
  poll();
  return () => {
    stopped = true;
    clearTimeout(timer);
    clearInterval(ticker);
  };
}
