// The waiter page: draws /api/state, follows /api/stream (SSE), sends the waiter's actions.
// No framework and no build step; Chinese first, English on the switch.
"use strict";

const TEXT = {
  zh: {
    title: "点餐终端", master: "主收银机", secondary: "副机", online: "已连接", offline: "未连接",
    revoked: "终端已停用", open: "开台", edit: "编辑", submit: "落单", presettle: "预结",
    unpresettle: "反预结", pay: "结账", complete: "完成支付", cancelPay: "取消支付",
    continue: "继续", cancel: "取消", mine: "我的", kind_order: "编辑中", kind_presettle: "已预结",
    kind_payment: "结账中", h5paying: "顾客支付中", holderOnline: "在线", holderOffline: "离线",
    noOrder: "空台", order: "订单", version: "版本", total: "合计", addDish: "加菜", remove: "退",
    dismiss: "知道了", lang: "English", completing: "确认中", presettledMark: "已预结",
    paid: "已完成支付", released: "已释放", seconds: "秒", fromH5: "扫码",
    sharesPaid: "已分单支付", remaining: "待付", share: "分单",
    move: "换桌", merge: "并桌", moveTo: "把此桌的客人换到:", mergeFrom: "把哪一桌的订单并入此桌:",
    inbox: "服务呼叫", take: "接单", takenBy: "已接单:", noRequests: "暂无呼叫",
    svc_call_waiter: "呼叫服务员", svc_water: "加水", svc_bill: "请求结账", moved: "已换桌", merged: "已并桌",
  },
  en: {
    title: "Order terminal", master: "Master", secondary: "Secondary", online: "Connected",
    offline: "Disconnected", revoked: "Terminal revoked", open: "Open table", edit: "Edit",
    submit: "Submit", presettle: "Pre-settle", unpresettle: "Undo pre-settle", pay: "Checkout",
    complete: "Complete payment", cancelPay: "Cancel payment", continue: "Continue", cancel: "Cancel",
    mine: "Mine", kind_order: "editing", kind_presettle: "pre-settled", kind_payment: "paying",
    h5paying: "Diner paying", holderOnline: "online", holderOffline: "offline", noOrder: "Free",
    order: "Order", version: "v", total: "Total", addDish: "Add", remove: "Remove", dismiss: "OK",
    lang: "中文", completing: "confirming", presettledMark: "Pre-settled", paid: "Payment complete",
    released: "Released", seconds: "s", fromH5: "QR",
    sharesPaid: "Paid in shares", remaining: "Remaining", share: "share",
    move: "Move", merge: "Merge", moveTo: "Move this party to:", mergeFrom: "Merge the order of which table into this one:",
    inbox: "Service requests", take: "Take", takenBy: "Taken by:", noRequests: "No requests",
    svc_call_waiter: "Call a waiter", svc_water: "Water", svc_bill: "The bill", moved: "Moved", merged: "Merged",
  },
};

let lang = localStorage.getItem("tablelock.lang") === "en" ? "en" : "zh";
let state = null;
let clockOffset = 0; // coordinator ms - browser ms

const $ = (sel) => document.querySelector(sel);
const t = (key) => TEXT[lang][key] ?? key;
const say = (obj) => (lang === "en" ? obj.message_en || obj.message : obj.message || obj.message_en) || "";
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
const money = (cents) => "¥" + (cents / 100).toFixed(2);

// --- drawing ---------------------------------------------------------------------------------

function applyLanguage() {
  document.documentElement.lang = lang === "en" ? "en" : "zh-CN";
  document.querySelectorAll("[data-i18n]").forEach((el) => { el.textContent = t(el.dataset.i18n); });
  $("#lang").textContent = t("lang");
  document.title = "tablelock · " + t("title");
  render();
}

function render() {
  if (!state) return;
  const me = state.terminal;
  $("#who").textContent = `${me.name} · ${me.master ? t("master") : t("secondary")}`;
  const conn = $("#conn");
  conn.className = "conn " + (me.connected ? "on" : "off");
  conn.textContent = me.revoked ? t("revoked") : me.connected ? t("online") : t("offline");
  $("#tables").innerHTML = state.tables.map((table) => card(table, state.menu)).join("");
  renderInbox(state.service_requests || []);
  tick();
}

// SPEC §11: diners' service requests; built with textContent only.
function renderInbox(requests) {
  const list = $("#inbox-list");
  list.replaceChildren();
  $("#inbox").dataset.open = requests.some((r) => r.state === "open") ? "1" : "0";
  if (!requests.length) {
    const li = document.createElement("li");
    li.textContent = t("noRequests");
    list.appendChild(li);
  }
  for (const r of requests) {
    const li = document.createElement("li");
    li.className = r.state;
    li.dataset.testid = "inbox-item";
    li.dataset.id = r.id;
    li.dataset.state = r.state;
    const what = document.createElement("span");
    const time = new Date(r.requested_at).toLocaleTimeString();
    what.textContent = `${r.table_id} · ${t("svc_" + r.kind)} · ${time}`;
    li.appendChild(what);
    if (r.state === "open") {
      const take = document.createElement("button");
      take.className = "small primary";
      take.dataset.testid = "inbox-take";
      take.textContent = t("take");
      take.addEventListener("click", () => {
        take.disabled = true;
        plainAction("POST", `/api/service-requests/${encodeURIComponent(r.id)}/take`, {}).finally(() => { take.disabled = false; });
      });
      li.appendChild(take);
    } else {
      const by = document.createElement("span");
      by.dataset.testid = "inbox-taken-by";
      by.textContent = `${t("takenBy")} ${(r.taken_by && (r.taken_by.name || r.taken_by.terminal_id)) || ""}`;
      li.appendChild(by);
    }
    list.appendChild(li);
  }
}

// Pick a table in the #pick dialog; resolves its id or null.
function pickTable(text, tables) {
  return new Promise((resolve) => {
    const dialog = $("#pick");
    $("#pick-text").textContent = text;
    const select = $("#pick-table");
    select.replaceChildren(...tables.map((table) => {
      const option = document.createElement("option");
      option.value = table.table_id;
      option.textContent = `${table.name} (${table.table_id})`;
      return option;
    }));
    dialog.hidden = false;
    const done = (answer) => {
      dialog.hidden = true;
      $("#pick-ok").onclick = $("#pick-cancel").onclick = null;
      resolve(answer);
    };
    $("#pick-ok").onclick = () => done(select.value || null);
    $("#pick-cancel").onclick = () => done(null);
  });
}

// 换桌: to a table without an open order. 并桌: another table's order into this one.
async function moveOrMerge(d, act) {
  const here = state.tables.find((table) => table.order && table.order.order_id === d.order);
  const others = state.tables.filter((table) => table !== here && (act === "move" ? !table.order : !!table.order));
  const target = await pickTable(t(act === "move" ? "moveTo" : "mergeFrom"), others);
  if (!target) return;
  const body = act === "move" ? { to_table_id: target }
    : { from_order_ids: [others.find((table) => table.table_id === target).order.order_id] };
  const path = `/api/orders/${d.order}/${act}`;
  let reply = await send("POST", path, { ...body, force: false });
  if (reply.error && reply.error.force_allowed) {
    if (!(await confirmForce(say(reply.error)))) return;
    reply = await send("POST", path, { ...body, force: true });
  }
  if (reply.error) toast(say(reply.error));
  else toast(t(act === "move" ? "moved" : "merged"), "ok");
}

function card(table, menu) {
  const order = table.order;
  const locks = table.locks || [];
  const held = new Set(table.held || []);
  const classes = ["table-card"];
  if (locks.some((l) => l.mine)) classes.push("locked-mine");
  if (locks.some((l) => !l.mine && l.holder.role === "erp")) classes.push("locked-other");
  if (locks.some((l) => l.holder.role === "h5")) classes.push("locked-h5");
  if (locks.some((l) => l.kind === "presettle")) classes.push("presettled");
  const id = esc(table.table_id);
  let body;
  if (!order) {
    body = `<div class="empty">${t("noOrder")}</div>
      <div class="actions"><button data-testid="btn-${id}-open" data-act="open" data-table="${id}">${t("open")}</button></div>`;
  } else {
    const o = esc(order.order_id);
    const editing = held.has("order");
    const items = order.items.map((item) => `<li data-testid="line-${id}-${esc(item.line_id)}">
        <span>${esc(item.name)} ×${item.qty}${item.source === "h5" ? `<span class="src-h5">${t("fromH5")}</span>` : ""}</span>
        <span>${money(item.qty * item.unit_price_cents)}${editing
          ? ` <button class="small" data-testid="btn-${id}-remove-${esc(item.line_id)}" data-act="remove" data-order="${o}" data-line="${esc(item.line_id)}">${t("remove")}</button>` : ""}</span>
      </li>`).join("");
    const editor = editing ? `<div class="editor" data-testid="editor-${id}">
        <div class="menu">${menu.map((dish) => `<button class="small" data-testid="btn-${id}-add-${esc(dish.sku)}" data-act="add" data-order="${o}" data-sku="${esc(dish.sku)}">+ ${esc(dish.name)} ${money(dish.unit_price_cents)}</button>`).join("")}</div>
      </div>` : "";
    body = `<div class="order-line" data-testid="order-${id}">${t("order")} ${o} · ${t("version")}${order.version} ·
        <span class="total" data-testid="total-${id}">${t("total")} ${money(order.total_cents)}</span>${order.paid_cents
          ? ` · <span class="split" data-testid="split-${id}">${t("sharesPaid")} ${money(order.paid_cents)} · ${t("remaining")} <span data-testid="remaining-${id}">${money(order.total_cents - order.paid_cents)}</span></span>` : ""}</div>
      <ul class="items">${items}</ul>${editor}
      <div class="actions">${buttons(id, o, held)}</div>`;
  }
  return `<article class="${classes.join(" ")}" data-testid="table-${id}">
    <h2><span>${esc(table.name)}${classes.includes("presettled") ? ` <span class="mark" data-testid="presettled-${id}">${t("presettledMark")}</span>` : ""}</span><small>${id}</small></h2>
    <div class="badges" data-testid="badges-${id}">${locks.map((l) => badge(id, l)).join("")}</div>
    ${body}</article>`;
}

function buttons(id, o, held) {
  const b = (act, label, cls = "") =>
    `<button class="${cls}" data-testid="btn-${id}-${act}" data-act="${act}" data-order="${o}">${t(label)}</button>`;
  if (held.has("payment")) return b("complete", "complete", "primary") + b("cancel-pay", "cancelPay");
  const out = [];
  if (held.has("order")) out.push(b("submit", "submit", "primary"));
  else if (!held.has("presettle")) out.push(b("edit", "edit"));
  if (held.has("presettle")) out.push(b("unpresettle", "unpresettle"));
  else out.push(b("presettle", "presettle"));
  out.push(b("pay", "pay"));
  out.push(b("move", "move"), b("merge", "merge"));
  return out.join("");
}

function badge(id, lock) {
  const kind = t("kind_" + lock.kind);
  const cls = ["badge", lock.mine ? "mine" : lock.holder.role === "h5" ? "h5" : "other"];
  if (lock.kind === "presettle") cls.push("presettle");
  let text;
  if (lock.mine) {
    text = `${t("mine")} · ${kind}`;
  } else if (lock.holder.role === "h5") {
    text = `${t("h5paying")} · <span class="countdown" data-expires="${lock.expires_at}"></span>`;
  } else {
    const online = lock.holder.online ? t("holderOnline") : `<span class="offline">${t("holderOffline")}</span>`;
    text = `${esc(lock.holder.name || lock.holder.terminal_id)} · ${kind} · ${online}`;
  }
  if (lock.completing) text += ` · ${t("completing")}`;
  if (lock.share) text += ` · ${t("share")} ${money(lock.share.amount_cents)}`;
  return `<span class="${cls.join(" ")}" data-testid="badge-${id}-${lock.kind}" data-holder="${esc(lock.holder.terminal_id || lock.holder.role)}">${text}</span>`;
}

function tick() {
  const now = Date.now() + clockOffset;
  document.querySelectorAll(".countdown").forEach((el) => {
    const left = Math.max(0, Math.ceil((Number(el.dataset.expires) - now) / 1000));
    el.textContent = `${left}${t("seconds")}`;
  });
}

// --- notices and toasts ----------------------------------------------------------------------

function toast(message, kind = "error") {
  const el = document.createElement("div");
  el.className = "toast " + kind;
  el.dataset.testid = "toast";
  el.textContent = message;
  $("#toasts").appendChild(el);
  setTimeout(() => el.remove(), 8000);
}

// A surplus payment stays on screen (no sound) until dismissed: its amount and refund state,
// which payment.refund_updated moves on (SPEC §9).
function surplusAlert(n) {
  let el = document.querySelector(`[data-testid="surplus-alert"][data-trade="${CSS.escape(String(n.out_trade_no))}"]`);
  if (n.kind === "refund") {
    if (!el) return;
    el.dataset.refund = n.refund_state || "";
    el.querySelector(".refund").textContent = lang === "en" ? n.refund_en : n.refund_zh;
    return;
  }
  if (!el) {
    el = document.createElement("div");
    el.className = "notice surplus";
    el.dataset.testid = "surplus-alert";
    el.dataset.trade = String(n.out_trade_no);
    el.setAttribute("role", "alert");
    const text = document.createElement("span");
    text.className = "text";
    const refund = document.createElement("span");
    refund.className = "refund";
    const close = document.createElement("button");
    close.className = "small";
    close.textContent = t("dismiss");
    close.addEventListener("click", () => el.remove());
    el.append(text, refund, close);
    $("#notices").appendChild(el);
  }
  el.dataset.refund = n.refund_state || "";
  el.dataset.amount = String(n.amount_cents);
  const [message, state] = say(n).split(" · ");
  el.querySelector(".text").textContent = message;
  el.querySelector(".refund").textContent = state || "";
}

function notice(n) {
  if (n.kind === "surplus" || n.kind === "refund") {
    surplusAlert(n);
  } else if (n.kind === "forced") {
    const el = document.createElement("div");
    el.className = "notice";
    el.dataset.testid = "notice";
    el.dataset.kind = n.kind;
    el.innerHTML = `<span>${esc(say(n))}</span><button class="small">${t("dismiss")}</button>`;
    el.querySelector("button").addEventListener("click", () => el.remove());
    $("#notices").appendChild(el);
  } else {
    toast(say(n), n.kind === "accepted" ? "ok" : "error");
  }
}

// --- the force-confirm dialog ----------------------------------------------------------------

function confirmForce(message) {
  return new Promise((resolve) => {
    const dialog = $("#confirm");
    $("#confirm-text").textContent = message;
    dialog.hidden = false;
    const done = (answer) => {
      dialog.hidden = true;
      $("#confirm-continue").onclick = $("#confirm-cancel").onclick = null;
      resolve(answer);
    };
    $("#confirm-continue").onclick = () => done(true);
    $("#confirm-cancel").onclick = () => done(false);
    $("#confirm-continue").focus();
  });
}

// --- actions ---------------------------------------------------------------------------------

async function send(method, path, body) {
  let response;
  try {
    response = await fetch(path, {
      method, headers: { "Content-Type": "application/json" }, body: body ? JSON.stringify(body) : undefined,
    });
  } catch (e) {
    return { error: { code: "UNAVAILABLE", message: "无法连接本机终端服务", message_en: "Cannot reach the terminal service" } };
  }
  if (response.status === 401) location.reload(); // session gone (simulator restarted): show the login notice
  const data = await response.json().catch(() => ({}));
  if (response.ok) return data;
  return { error: data.error || { code: "HTTP_" + response.status, message: "操作失败", message_en: "Failed" } };
}

// Send a lock-taking action; a refusal that allows force asks the user, then repeats with force.
// PAYMENT_UNVERIFIED (a diner's in-flight payment the provider could not be asked about) asks
// once more with its stronger warning, then repeats with force_unverified (SPEC §9.6).
async function lockAction(path) {
  let reply = await send("POST", path, { force: false });
  if (reply.error && reply.error.force_allowed) {
    if (!(await confirmForce(say(reply.error)))) return;
    reply = await send("POST", path, { force: true });
  }
  if (reply.error && reply.error.code === "PAYMENT_UNVERIFIED" && reply.error.force_allowed) {
    if (!(await confirmForce(say(reply.error)))) return;
    reply = await send("POST", path, { force: true, force_unverified: true });
  }
  if (reply.error) toast(say(reply.error));
}

async function plainAction(method, path, body, okMessage) {
  const reply = await send(method, path, body);
  if (reply.error) toast(say(reply.error));
  else if (okMessage) toast(t(okMessage), "ok");
}

const ACT = {
  open: (d) => plainAction("POST", `/api/tables/${d.table}/orders`, {}),
  edit: (d) => lockAction(`/api/orders/${d.order}/editor`),
  add: (d) => plainAction("POST", `/api/orders/${d.order}/items`, { sku: d.sku, qty: 1 }),
  remove: (d) => plainAction("DELETE", `/api/orders/${d.order}/items/${d.line}`),
  submit: (d) => plainAction("POST", `/api/orders/${d.order}/submit`, {}),
  presettle: (d) => lockAction(`/api/orders/${d.order}/presettle`),
  unpresettle: (d) => plainAction("POST", `/api/orders/${d.order}/presettle/release`, {}),
  pay: (d) => lockAction(`/api/orders/${d.order}/payment`),
  complete: (d) => plainAction("POST", `/api/orders/${d.order}/payment/complete`, {}, "paid"),
  "cancel-pay": (d) => plainAction("POST", `/api/orders/${d.order}/payment/cancel`, {}),
  move: (d) => moveOrMerge(d, "move"),
  merge: (d) => moveOrMerge(d, "merge"),
};

$("#tables").addEventListener("click", (event) => {
  const button = event.target.closest("button[data-act]");
  if (!button || button.disabled) return;
  const run = ACT[button.dataset.act];
  if (!run) return;
  button.disabled = true;
  run(button.dataset).finally(() => { button.disabled = false; });
});

$("#lang").addEventListener("click", () => {
  lang = lang === "zh" ? "en" : "zh";
  localStorage.setItem("tablelock.lang", lang);
  applyLanguage();
});

// --- live state ------------------------------------------------------------------------------

function setState(next) {
  state = next;
  clockOffset = next.now - Date.now();
  render();
}

function follow() {
  const source = new EventSource("/api/stream");
  source.addEventListener("state", (e) => setState(JSON.parse(e.data)));
  source.addEventListener("notice", (e) => notice(JSON.parse(e.data)));
  // EventSource reconnects by itself; the first state after reconnecting redraws everything.
}

// Same-origin fetches and EventSource send the session cookie the login link set.
fetch("/api/state").then((r) => r.json()).then(setState).catch(() => {});
applyLanguage();
follow();
setInterval(tick, 250);
