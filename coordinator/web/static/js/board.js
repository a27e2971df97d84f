// The live lock board: every active lock of the store with its kind, order, table, holder, whether
// the holder is online, and a countdown to expires_at.
//
// The coordinator's websocket serves terminals and diners only (an admin token is closed with
// 4403), so the board polls GET .../locks every POLL_MS. The countdown runs on the coordinator's
// clock: each answer carries `now` (Redis time), and the page keeps `server - local` from the
// midpoint of the request, so a browser whose clock is off still counts down right.

import { storePath } from "./api.js";
import { clockTime, holderName, kindName, money, remaining, shortId } from "./format.js";
import { confirmDialog, el, table, toast } from "./dom.js";

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
  // Ending a stuck lock (SPEC §11): the admin's reason goes with every release, into the audit log.
  const reason = el("input", { testid: "release-reason", placeholder: t("release_reason"), maxlength: 200 });
  const tableInput = el("input", { testid: "release-table-id", placeholder: t("table"), size: 8 });
  const tableButton = el("button", { type: "button", class: "danger", testid: "release-table", text: t("release_table"),
    on: { click: () => release(storePath(storeId, "tables", tableInput.value.trim(), "release"), tableInput.value.trim()) } });
  const requests = el("div", { testid: "service-requests" });
  root.append(el("h2", { text: t("board_title") }), el("p", { class: "muted", text: t("board_intro") }),
    el("div", { class: "card" }, status, el("p", { class: "row" }, reason, " ", tableInput, " ", tableButton), body),
    el("h2", { text: t("service_title") }), el("div", { class: "card" }, requests));

  // fence: one lock only (a diner's split-bill share beside other shares of the order).
  async function release(releasePath, what, fence) {
    const text = reason.value.trim();
    if (!text || !what) {
      toast(t("release_need_reason"), "error");
      return;
    }
    if (!(await confirmDialog({ title: t("release_title"), text: t("release_confirm", what), ok: t("release") }))) return;
    try {
      const done = await api.request("POST", releasePath, fence === undefined ? { reason: text } : { reason: text, fence });
      toast(done.kept.length ? t("release_kept", done.released.length, done.kept.length) : t("release_done", done.released.length));
      poll(true);
    } catch (e) {
      toast(e.message || t("board_error"), "error");
    }
  }

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
    el("td", { class: "muted", text: clockTime(lock.expires_at) }),
    el("td", {}, el("button", { type: "button", class: "danger", testid: "release-lock", text: t("release"),
      on: { click: () => release(storePath(storeId, "orders", lock.order_id, "locks", lock.kind, "release"),
        `${kindName(lock.kind, t)} · ${lock.order_id}`, lock.fence) } })));
  }

  function requestRow(request) {
    const by = request.taken_by;
    return el("tr", { testid: "service-row", dataset: { id: request.id, state: request.state, tableId: request.table_id } },
      el("td", { class: "mono", text: request.table_id }),
      el("td", { text: t(`service_${request.kind}`) }),
      el("td", { class: "muted", text: clockTime(request.requested_at) }),
      el("td", { testid: "service-state", text: by ? t("service_taken_by", holderName(by, t)) : t("service_open") }));
  }

  function renderRequests(list) {
    requests.replaceChildren(list.length === 0
      ? el("p", { class: "empty", testid: "service-empty", text: t("service_empty") })
      : table("service-table", [t("table"), t("service_kind"), t("service_at"), t("service_state")], list.map(requestRow)));
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
      [t("kind"), t("order"), t("table"), t("holder"), t("holder_online"), t("fence"), t("remaining"), t("expires_at"), ""],
      locks.map(row)));
    tick();
  }

  async function poll(once = false) {
    const sent = localNow();
    try {
      const [board, asked] = await Promise.all([api.request("GET", path), api.request("GET", storePath(storeId, "service-requests"))]);
      if (stopped) return;
      renderRequests(asked.requests);
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
    if (once !== true) timer = setTimeout(poll, POLL_MS);
  }

  const ticker = setInterval(tick, TICK_MS);
  poll();
  return () => {
    stopped = true;
    clearTimeout(timer);
    clearInterval(ticker);
  };
}
