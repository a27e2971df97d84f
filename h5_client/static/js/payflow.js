// The provider payment as the diner lives it (SPEC §9), as pure functions: no DOM, no network,
// `now` passed in. The page never declares a payment complete: it only waits for the
// coordinator's events about the trade it started.
//
//   confirm ──start──▶ starting ──201──▶ in_flight ──(leave for the provider's pay page, come back)
//   in_flight ──lock.renewed completing──▶ completing
//   in_flight | completing ──order.paid / lock.released paid──▶ result paid       ("支付成功")
//                          (a split-bill share: lock.released paid ──▶ result share_paid, the
//                          table's page stays: others may still be paying theirs)
//                          (a force on my in-flight lock keeps me waiting: the provider decides)
//                          ──payment.failed──────────────────▶ result failed     ("支付失败,请重试")
//                          ──payment.surplus─────────────────▶ result surplus    ("已退款" once refunded)
//   result surplus ──payment.refund_updated──▶ its refund_state follows
//   in_flight | completing, lock gone after a resync with no event ──▶ result unknown (ask staff)
//
// Events about my trade are applied whatever their seq: after a round trip to the pay page the
// table is read afresh and the socket resumes from the seq saved at the start, so the outcome may
// arrive in a replay older than the table read.

/** Phases in which my payment waits for the provider and the coordinator. */
export const WAITING = new Set(["starting", "in_flight", "completing"]);

/** The payment after POST /h5/payments/start answered 201 (`since`: the seq when it was sent). */
export function started(payment, reply, since) {
  return {
    ...payment,
    phase: "in_flight",
    out_trade_no: reply.out_trade_no,
    provider: reply.provider,
    pay_url: reply.pay_url,
    amount_cents: reply.amount_cents,
    expires_at: reply.expires_at,
    since,
  };
}

function mineByLock(payment, lock) {
  return !!payment && !!lock && lock.kind === "payment" && lock.order_id === payment.order_id
    && lock.fence === payment.fence;
}

function mineByTrade(payment, data) {
  return !!payment && !!payment.out_trade_no && data.out_trade_no === payment.out_trade_no;
}

function result(state, payResult, extra = {}) {
  return { ...state, payment: null, lost: null, payResult, ...extra };
}

/**
 * The state after an event that may be about my provider payment (or its surplus refund);
 * any other event returns `state` unchanged.
 */
export function payEvent(state, event) {
  const data = event.data || {};
  const payment = state.payment && WAITING.has(state.payment.phase) ? state.payment : null;
  const done = state.payResult;
  switch (event.name) {
    case "lock.renewed":
      if (!mineByLock(payment, data.lock)) return state;
      return {
        ...state,
        payment: {
          ...payment,
          expires_at: data.lock.expires_at,
          phase: data.reason === "completing" || data.lock.completing ? "completing" : payment.phase,
        },
      };
    case "lock.released":
      if (!mineByLock(payment, data.lock) || data.reason !== "paid") return state;
      if (payment.share) {
        return result(state, { kind: "share_paid", amount_cents: payment.amount_cents, out_trade_no: payment.out_trade_no,
          share: payment.share, order_id: payment.order_id });
      }
      return result(state, { kind: "paid", amount_cents: payment.amount_cents, out_trade_no: payment.out_trade_no },
        { paidByMe: true });
    case "share.paid":
      return adoptPaidOrder(state, data.order);
    case "order.paid": {
      const order = data.order;
      if (!payment) return adoptPaidOrder(state, order);
      const ref = String(data.payment_ref || (order && order.payment_ref) || "");
      if (!payment || !order || order.order_id !== payment.order_id) return state;
      if (payment.share) return state; // my share ends by its own lock.released (paid), just before
      if (payment.provider && ref && !ref.startsWith(`${payment.provider}:`)) return state; // paid at the till
      return result(state, { kind: "paid", amount_cents: payment.amount_cents, out_trade_no: payment.out_trade_no },
        { paidByMe: true, order });
    }
    case "payment.failed":
      if (!mineByTrade(payment, data)) return state;
      if (data.reason === "released") return { ...state, payment: null }; // my own cancel
      // A cashier's force closed my unpaid provider order first (SPEC §9.6).
      if (data.reason === "forced") return { ...state, payment: null, lost: "forced" };
      return result(state, { kind: "failed", out_trade_no: payment.out_trade_no, status: data.status,
        share: payment.share || null });
    case "payment.surplus":
      if (!mineByTrade(payment, data) && !(done && data.out_trade_no === done.out_trade_no)) return state;
      return result(state, {
        kind: "surplus", out_trade_no: data.out_trade_no,
        amount_cents: data.amount_cents, refund_state: data.refund_state || null,
      });
    case "payment.refund_updated":
      if (!done || done.kind !== "surplus" || data.out_trade_no !== done.out_trade_no) return state;
      return { ...state, payResult: { ...done, refund_state: data.refund_state } };
    default:
      return state;
  }
}

/**
 * Back from the pay page after my share was paid, the table read may no longer list the order (the
 * shares reached the total, it left the table): the replayed events about it bring it back, so
 * the page still shows what the table paid.
 */
function adoptPaidOrder(state, order) {
  const done = state.payResult;
  if (!done || done.kind !== "share_paid" || !order || order.order_id !== done.order_id) return state;
  const current = state.order;
  if (current && current.order_id === order.order_id && (current.status === "paid" || order.status !== "paid")) return state;
  return { ...state, order, closed: false };
}

/**
 * The state after a resync (a snapshot instead of the replay, then a table read): when my trade's
 * lock is gone and no event told how it ended, the outcome is unknown to this page — say so
 * rather than wait for events that will never come.
 */
export function afterResync(state) {
  const payment = state.payment;
  if (!payment || !WAITING.has(payment.phase) || payment.phase === "starting") return state;
  if (state.locks.some((l) => mineByLock(payment, l))) return state;
  return result(state, { kind: "unknown", out_trade_no: payment.out_trade_no, amount_cents: payment.amount_cents });
}

/** Seconds left of my in-flight payment (null when there is none or the clock is unknown). */
export function waitingSeconds(state, now) {
  const payment = state.payment;
  if (!payment || !WAITING.has(payment.phase) || payment.phase === "starting" || now === null) return null;
  return Math.max(0, Math.ceil((payment.expires_at - now) / 1000));
}
