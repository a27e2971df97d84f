// The page's model and the pure functions that change it: no DOM, no network, `now` passed in.
//
// state = {
//   store, table, config, seq,        from GET /h5/table, kept current by events or polling
//   order,                            the table's open order (or the one that just closed)
//   locks,                            live locks of the table, in the H5 viewer form
//   payment,                          my checkout: {token, fence, order_id, version, amount_cents,
//                                     share (split bill: the lock's share, else null), expires_at, phase: "confirm" | "starting" | "in_flight" |
//                                     "completing", and once started out_trade_no, provider,
//                                     pay_url, since} (payflow.js)
//   payResult,                        how my provider payment ended: {kind: "paid" | "failed" |
//                                     "surplus", out_trade_no, amount_cents, refund_state}
//   lost,                             "expired" | "forced" when my payment lock ended under me
//   paidByMe,                         true once my payment completed (the paid screen)
//   closed,                           the order vanished from the table while we watched (polling)
// }

export const EDIT_KINDS = new Set(["order", "presettle"]);
/** Phases of my checkout while only the claim (h5_payment_lock_seconds) holds the order. */
const CLAIMED = new Set(["confirm", "starting"]);

/** A fresh, empty state. */
export function emptyState() {
  return {
    store: null, table: null, config: null, seq: 0, order: null, locks: [],
    payment: null, lost: null, paidByMe: false, closed: false, payResult: null,
  };
}

function slotOf(kind) {
  return EDIT_KINDS.has(kind) ? "edit" : "pay";
}

/**
 * `locks` with `lock` in its order's slot (a slot holds one lock: SPEC invariant 1). Split-bill
 * share locks (SPEC §10) live side by side in the pay slot, each known by its fence.
 */
function replaceSlot(locks, lock) {
  const sameSlot = (l) => l.order_id === lock.order_id && slotOf(l.kind) === slotOf(lock.kind);
  const others = locks.filter((l) => !(sameSlot(l) && (l.fence === lock.fence || (!l.share && !lock.share))));
  return [...others, lock];
}

/** Whether `incoming` is an older picture of `current` (a lower version, or reopened after closing). */
function olderThan(incoming, current) {
  return incoming.version < current.version
    || (incoming.version === current.version && current.status !== "open" && incoming.status === "open");
}

function isMyPaymentLock(payment, lock) {
  return !!payment && lock.kind === "payment" && lock.order_id === payment.order_id && lock.fence === payment.fence;
}

/**
 * Locks of the shown order that have not passed `expires_at` (a past lock never blocks: SPEC §2).
 * `now` is null until the server's clock is known: the phone's own clock may be minutes off, so
 * until then the server's list is trusted as it is.
 */
export function liveLocks(state, now) {
  const orderId = state.order && state.order.order_id;
  return state.locks.filter((l) => l.order_id === orderId && (now === null || l.expires_at > now));
}

/** How my payment ended when its lock is gone: past its expiry it timed out, otherwise it was taken. */
function lostReason(payment, now) {
  return now !== null && now >= payment.expires_at ? "expired" : "forced";
}

/**
 * The state after GET /h5/table (first load, polling, or after "fetch the order again").
 * `askedWith` is the token of my payment when the read was sent: a read sent before my checkout
 * was granted cannot know my lock and must not be taken for its loss.
 */
export function fromTable(state, body, now, askedWith = null) {
  const next = { ...state, store: body.store, table: body.table, config: body.config };
  if ((body.seq || 0) < (state.seq || 0)) return next; // older than events already applied
  next.seq = body.seq || 0;
  next.locks = body.locks || [];
  const current = state.order;
  if (body.order) {
    const older = current && current.order_id === body.order.order_id && olderThan(body.order, current);
    next.order = older ? current : body.order;
    next.closed = false;
  } else if (current && current.status === "open") {
    // The open order left the table (paid at the desk, cancelled): keep showing it, closed.
    next.closed = true;
  }
  const payment = state.payment;
  if (payment && payment.phase === "confirm" && payment.token === askedWith) {
    const mine = next.locks.some((l) => isMyPaymentLock(payment, l) && (now === null || l.expires_at > now));
    if (!mine) {
      next.lost = lostReason(payment, now);
      next.payment = null;
    }
  }
  return next;
}

/** The state after my checkout was granted: 201 {lock, order} of POST /h5/checkout. */
export function checkedOut(state, grant) {
  const { token, ...view } = grant.lock;
  const lock = { ...view, holder: { role: "h5", is_me: true } };
  const payment = {
    token, fence: lock.fence, order_id: lock.order_id,
    version: lock.version ?? grant.order.version,
    amount_cents: lock.share ? lock.share.amount_cents : grant.order.total_cents, share: lock.share || null,
    expires_at: lock.expires_at, phase: "confirm",
  };
  return {
    ...state, order: grant.order, closed: false, lost: null, payment, payResult: null,
    locks: replaceSlot(state.locks, lock),
  };
}

/** The state after an order arrived (order.updated, an items or error response): newer versions win. */
export function withOrder(state, order) {
  if (!order) return state;
  const current = state.order;
  if (current && current.order_id === order.order_id) {
    return olderThan(order, current) ? state : { ...state, order, closed: false };
  }
  // Another order of the table: follow it when it is open and ours is not (SPEC §2 Tables).
  if (!current || current.status !== "open" || state.closed) {
    if (order.status === "open") return { ...state, order, closed: false, paidByMe: false };
  }
  return state;
}

/** The state with a lock learnt from an error body (PAYMENT_LOCKED…), before its event arrives. */
export function withLock(state, lock) {
  if (!lock || !state.order || lock.order_id !== state.order.order_id) return state;
  return { ...state, locks: replaceSlot(state.locks, lock) };
}

function withoutLock(locks, lock) {
  return locks.filter((l) => !(l.order_id === lock.order_id && l.fence === lock.fence));
}

/**
 * The state after one websocket event. Events at or below `state.seq` were already applied (or
 * are reflected in a table read taken at that seq) and are skipped; applying one twice is harmless.
 */
export function applyEvent(state, event, now) {
  if (typeof event.seq === "number" && event.seq <= state.seq) return state;
  let next = { ...state, seq: typeof event.seq === "number" ? event.seq : state.seq };
  const data = event.data || {};
  const lock = data.lock;
  switch (event.name) {
    case "lock.acquired":
      next.locks = replaceSlot(next.locks, lock);
      break;
    case "lock.renewed":
      next.locks = [...withoutLock(next.locks, lock), lock];
      break;
    case "lock.released":
    case "lock.expired":
    case "lock.forced":
      next.locks = withoutLock(next.locks, lock);
      if (isMyPaymentLock(next.payment, lock)) {
        if (event.name === "lock.forced" && CLAIMED.has(next.payment.phase)) {
          next = { ...next, payment: null, lost: "forced" };
        } else if (event.name === "lock.expired" && next.payment.phase === "confirm") {
          next = { ...next, payment: null, lost: "expired" };
        } else if (event.name === "lock.released" && data.reason !== "paid" && next.payment.phase === "confirm") {
          // Released without a payment (cancelled, order closed): nothing left to pay with.
          next = { ...next, payment: null };
        }
      }
      break;
    case "order.updated":
    case "share.paid": // split bill: the order now carries the new paid_cents and shares
      next = withOrder(next, data.order);
      break;
    case "order.paid":
      if (data.order) {
        next = withOrder(next, data.order);
        if (next.order && next.order.order_id === data.order.order_id) {
          next.order = data.order;
          next.locks = next.locks.filter((l) => l.order_id !== data.order.order_id);
        }
      }
      break;
    case "config.updated":
      if (data.config) next.config = { ...next.config, ...data.config };
      break;
    default:
      break;
  }
  return next;
}

/** My payment when its countdown ran out before any event said so. */
export function expireLocally(state, now) {
  if (now !== null && state.payment && state.payment.phase === "confirm" && now >= state.payment.expires_at) {
    return { ...state, payment: null, lost: "expired" };
  }
  return state;
}

/**
 * What the page shows now: banners (by `kind`), whether paying and adding dishes are open.
 * Banner kinds: paid | closed | order (waiter editing) | presettle | payment (someone else paying).
 */
export function derive(state, now) {
  const order = state.order;
  const banners = [];
  if (order && order.status === "paid") banners.push({ kind: "paid" });
  else if (order && (order.status === "cancelled" || state.closed)) banners.push({ kind: "closed" });
  const locks = order && order.status === "open" && !state.closed ? liveLocks(state, now) : [];
  const edit = locks.find((l) => EDIT_KINDS.has(l.kind));
  // A whole-order payment lock excludes every share; shares (SPEC §10) only exclude what they cover.
  const pay = locks.find((l) => l.kind === "payment" && !l.share);
  const payByOther = pay && !(pay.holder && pay.holder.is_me);
  const othersShares = locks.filter((l) => l.kind === "payment" && l.share && !(l.holder && l.holder.is_me));
  if (edit && edit.kind === "order") banners.push({ kind: "order" });
  if (edit && edit.kind === "presettle") banners.push({ kind: "presettle" });
  if (payByOther) banners.push({ kind: "payment", by: pay.holder ? pay.holder.role : "erp" });
  else if (othersShares.length) banners.push({ kind: "share", by: othersShares[0].holder ? othersShares[0].holder.role : "erp" });
  const open = !order || (order.status === "open" && !state.closed);
  const canPay = !!order && open && order.items.length > 0 && !(edit && edit.kind === "order") && !payByOther
    && !state.payment;
  return {
    banners,
    canPay,
    // Once the table splits, the whole-order button pays what nobody has paid or claimed ("the rest").
    payRest: !!order && ((order.paid_cents || 0) > 0 || othersShares.length > 0),
    canAdd: open && !(edit && edit.kind === "presettle") && !locks.some((l) => l.kind === "payment"),
    secondsLeft: state.payment && CLAIMED.has(state.payment.phase) && now !== null
      ? Math.max(0, Math.ceil((state.payment.expires_at - now) / 1000)) : null,
  };
}
