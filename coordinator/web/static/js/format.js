// How the console writes times, holders, actors and audit events, in the words of SPEC §2 and §7.

const pad = (n, w = 2) => String(n).padStart(w, "0");

/** Unix ms → "2024-05-01 12:30:05" in the browser's time zone. */
export function dateTime(ms) {
  if (typeof ms !== "number") return "";
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${clockTime(ms)}`;
}

/** Unix ms → "12:30:05". */
export function clockTime(ms) {
  const d = new Date(ms);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** Unix ms → "12:30:05.123" (audit entries are ms apart). */
export function preciseTime(ms) {
  return `${clockTime(ms)}.${pad(new Date(ms).getMilliseconds(), 3)}`;
}

/** A `<input type="datetime-local">` value → Unix ms (local time), or null when empty. */
export function localInputMs(value) {
  if (!value) return null;
  const ms = new Date(value).getTime();
  return Number.isFinite(ms) ? ms : null;
}

/** Remaining ms → "4.8 秒" under a minute (the H5 lock is seconds long), else "m:ss" / "h:mm:ss". */
export function remaining(ms, t) {
  if (ms <= 0) return t("expired");
  if (ms < 60_000) return t("seconds_left", (Math.floor(ms / 100) / 10).toFixed(1));
  const total = Math.floor(ms / 1000);
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  return h ? `${h}:${pad(m)}:${pad(s)}` : `${m}:${pad(s)}`;
}

/** A lock kind's name (订单锁 / 预结锁 / 支付锁). */
export function kindName(kind, t) {
  return t(`kind_${kind}`);
}

/** A lock holder as staff see it: the terminal's name, or "顾客(扫码点餐)" for an H5 session. */
export function holderName(holder, t) {
  if (!holder) return "";
  if (holder.role === "erp") return holder.name || holder.terminal_id;
  if (holder.role === "h5") return t("h5_diner");
  return holder.role;
}

/** Whoever caused an audit entry. */
export function actorName(actor, t) {
  if (!actor) return t("actor_system");
  if (actor.role === "erp") return `${actor.name || ""} (${actor.terminal_id})`.trim();
  if (actor.role === "h5") return `${t("actor_h5")} ${shortId(actor.session_id)}`;
  if (actor.role === "admin") return t("actor_admin");
  return t("actor_system");
}

/** The first characters of an opaque id, enough to tell two apart on screen. */
export function shortId(id) {
  return id ? String(id).slice(0, 8) : "";
}

/** An event name in words ("lock.forced" → "强制解锁"), the name itself if unknown. */
export function eventName(name, t) {
  const key = `ev_${String(name).replace(/\./g, "_")}`;
  const text = t(key);
  return text === key ? name : text;
}

export function money(cents) {
  return typeof cents === "number" ? `¥${(cents / 100).toFixed(2)}` : "";
}

/** A one-line summary of an audit entry's data for the log and the reconciliation trails. */
export function summary(entry, t) {
  const data = entry.data || {};
  const parts = [];
  const lock = data.lock && typeof data.lock === "object" ? data.lock : null;
  if (lock) {
    parts.push(`${kindName(lock.kind, t)} · ${holderName(lock.holder, t)}`);
    if (lock.fence !== undefined) parts.push(`${t("fence")} ${lock.fence}`);
    if (lock.version !== undefined && lock.version !== null) parts.push(`${t("version")} ${lock.version}`);
  }
  if (data.reason) {
    const key = `reason_${data.reason}`;
    const text = t(key);
    parts.push(text === key ? data.reason : text);
  }
  if (data.by) parts.push(`${t("by")}: ${actorName(data.by, t)}`);
  if (data.code) parts.push(`${t("code")} ${data.code}`);
  if (entry.name === "payment.rejected" || entry.name === "order.paid") {
    if (data.amount_cents !== undefined) parts.push(`${t("amount")} ${money(data.amount_cents)}`);
    if (data.payment_ref) parts.push(String(data.payment_ref));
  }
  if (entry.name === "share.paid") {
    parts.push(`${money(data.share && data.share.amount_cents)} · ${t("share")} ${money(data.paid_cents)} / ${money(data.paid_cents + data.remaining_cents)}`);
  }
  if (entry.name === "order.updated" && data.order) {
    parts.push(`${t("version")} ${data.order.version} · ${money(data.order.total_cents)} · ${data.order.status}`);
  }
  if (entry.name === "config.updated" && Array.isArray(data.changed) && data.config) {
    parts.push(data.changed.map((key) => `${t(key)} = ${data.config[key]}`).join(", "));
  }
  if (entry.name === "terminal.status") {
    parts.push(`${data.terminal_id} ${data.online ? t("status_online") : t("status_offline")}`);
  }
  if (entry.name === "terminal.registered" || entry.name === "terminal.revoked") {
    parts.push([data.name, data.terminal_id, data.master ? t("master") : ""].filter(Boolean).join(" · "));
  }
  if (entry.name === "table.updated" || entry.name === "store.updated") {
    parts.push([data.table_id, data.name].filter(Boolean).join(" · "));
  }
  return parts.join(" · ");
}
