// The page's words in zh-CN (the product language) and English. Lock texts follow SPEC §5.

export const STRINGS = {
  "zh-CN": {
    title: "扫码点餐",
    lang_switch: "EN",
    loading: "正在加载…",
    table: "桌台",
    order: "我的订单",
    no_order: "暂无订单,选择菜品即可下单",
    total: "合计",
    qty: "×",
    source_h5: "扫码",
    menu: "菜单",
    menu_unavailable: "菜单暂时无法加载,请稍后再试或联系服务员",
    add: "加",
    remove: "减",
    cart_empty: "未选菜品",
    cart_count: (n) => `已选 ${n} 份`,
    submit_items: "下单",
    submitting: "提交中…",
    items_added: "加菜成功,已送厨房",
    pay: "支付",
    pay_amount: (amount) => `支付 ${amount}`,
    paying_title: "选择支付方式",
    pay_hint: "将打开支付页面,支付完成后自动返回本页",
    countdown: (s) => `请在 ${s} 秒内完成支付`,
    provider_wechatpay: "微信支付",
    provider_alipay: "支付宝",
    starting_pay: "正在打开支付页面…",
    waiting_title: "等待支付结果…",
    waiting: "支付结果以支付平台通知为准,请勿重复支付",
    waiting_countdown: (s) => `剩余 ${s} 秒`,
    completing: "已收到付款,正在通知收银台…",
    waiting_hint: "如已支付,请稍候;超时未支付的订单将自动关闭",
    reopen_pay: "继续支付",
    retry_pay: "重新支付",
    result_failed_title: "支付失败,请重试",
    result_failed_body: "本次支付未完成,未扣款",
    result_refunded_title: "已退款",
    result_refunding_title: "退款处理中",
    result_refund_manual_title: "款项待退回",
    result_surplus_body: "订单已由其他方式结清或已变更,本次付款将原路退回",
    result_refund_failed_body: "自动退款未成功,请联系服务员处理",
    pay_unavailable: "暂时无法发起在线支付,请稍后再试或到前台结账",
    result_unknown_title: "支付结果待确认",
    result_unknown_body: "暂时无法获取本次支付的结果,请勿重复支付,请联系服务员确认",
    cancel_pay: "取消",
    checking_out: "正在获取最新订单…",
    paid_title: "支付成功",
    paid_body: "订单已支付,感谢光临",
    lost_expired_title: "支付已超时",
    lost_forced_title: "支付已被店员接管",
    lost_body: "支付已超时或已被其他终端接管,请重新获取订单后再支付",
    refetch: "重新获取订单",
    frontdesk: "获取订单失败,请到前台结账",
    banner_order: "服务员正在修改订单,暂不能支付,可继续加菜",
    banner_presettle: "订单已预结,如需修改请联系服务员",
    banner_payment: "订单正在其他机器/顾客端进行支付,请稍后再试",
    banner_payment_h5: "同桌顾客正在支付",
    banner_payment_erp: "收银台正在结账",
    banner_paid: "订单已支付",
    banner_closed: "订单已关闭",
    conn_live: "实时",
    conn_connecting: "连接中…",
    conn_reconnecting: "连接已断开,正在重连…",
    conn_polling: "实时连接不可用,每隔几秒自动刷新",
    session_failed: "二维码无效或已过期,请重新扫码",
    network_error: "网络异常,请稍后再试",
    close: "知道了",
  },
  en: {
    title: "Scan & order",
    lang_switch: "中文",
    loading: "Loading…",
    table: "Table",
    order: "My order",
    no_order: "No order yet: pick dishes to start one",
    total: "Total",
    qty: "×",
    source_h5: "scan",
    menu: "Menu",
    menu_unavailable: "The menu cannot be loaded right now; try again shortly or ask a waiter",
    add: "Add",
    remove: "Less",
    cart_empty: "Nothing picked",
    cart_count: (n) => `${n} picked`,
    submit_items: "Order",
    submitting: "Sending…",
    items_added: "Dishes added and sent to the kitchen",
    pay: "Pay",
    pay_amount: (amount) => `Pay ${amount}`,
    paying_title: "Choose how to pay",
    pay_hint: "The payment page opens; you come back here when it is done",
    countdown: (s) => `Complete the payment within ${s} s`,
    provider_wechatpay: "WeChat Pay",
    provider_alipay: "Alipay",
    starting_pay: "Opening the payment page…",
    waiting_title: "Waiting for the payment result…",
    waiting: "The payment provider's notice decides; please do not pay twice",
    waiting_countdown: (s) => `${s} s left`,
    completing: "Payment received, telling the cashier…",
    waiting_hint: "If you have paid, please wait; an unpaid payment closes by itself when time runs out",
    reopen_pay: "Continue paying",
    retry_pay: "Pay again",
    result_failed_title: "Payment failed, please try again",
    result_failed_body: "This payment did not go through; nothing was charged",
    result_refunded_title: "Refunded",
    result_refunding_title: "Refund in progress",
    result_refund_manual_title: "To be refunded",
    result_surplus_body: "The order was settled another way or changed; this payment goes back to you",
    result_refund_failed_body: "The automatic refund did not go through; please ask a waiter",
    pay_unavailable: "Online payment is unavailable right now; try again later or pay at the front desk",
    result_unknown_title: "Payment result pending",
    result_unknown_body: "This page cannot learn the payment's result right now; please do not pay again and ask a waiter",
    cancel_pay: "Cancel",
    checking_out: "Fetching the latest order…",
    paid_title: "Paid",
    paid_body: "The order has been paid. Thank you!",
    lost_expired_title: "Payment timed out",
    lost_forced_title: "Staff took over the payment",
    lost_body: "The payment timed out or was taken over by another terminal; fetch the order again before paying",
    refetch: "Fetch the order again",
    frontdesk: "Could not fetch the order; please pay at the front desk",
    banner_order: "A waiter is editing the order: paying is paused, you can still add dishes",
    banner_presettle: "The bill has been pre-settled; ask a waiter to change it",
    banner_payment: "The order is being paid on another terminal or by a diner; please try again later",
    banner_payment_h5: "Another diner at this table is paying",
    banner_payment_erp: "The cashier is taking payment",
    banner_paid: "This order has been paid",
    banner_closed: "This order is closed",
    conn_live: "Live",
    conn_connecting: "Connecting…",
    conn_reconnecting: "Connection lost, reconnecting…",
    conn_polling: "Live updates unavailable; refreshing every few seconds",
    session_failed: "This QR code is invalid or has expired; please scan it again",
    network_error: "Network problem; please try again",
    close: "OK",
  },
};

export const LANGS = Object.keys(STRINGS);

/** The language to start in: the saved choice, else zh-CN (the product language). */
export function initialLang(saved) {
  return LANGS.includes(saved) ? saved : "zh-CN";
}

/** A translator for `lang`: t(key, ...args). */
export function translator(lang) {
  const table = STRINGS[lang] || STRINGS["zh-CN"];
  return (key, ...args) => {
    const value = table[key] ?? STRINGS["zh-CN"][key] ?? key;
    return typeof value === "function" ? value(...args) : value;
  };
}

/** The text of a SPEC error body in `lang`. */
export function errorText(error, lang) {
  if (!error) return "";
  return lang === "en" ? error.message_en || error.message : error.message || error.message_en;
}

/** Minor units as money: 3800 → "¥38.00". */
export function money(cents) {
  return `¥${(Number(cents || 0) / 100).toFixed(2)}`;
}
