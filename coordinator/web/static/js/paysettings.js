// 支付设置 (SPEC §9): one card per provider with the store's merchant settings. Secrets are
// write-only: the API answers {"set": true} in their place and the form shows "已设置", never a
// value; a secret field left empty keeps the stored one (the PUT leaves it out). 测试连接 calls the
// provider's query API with the stored settings. auto_refund_surplus and the payment window live
// in 配置 (they are store configuration, read from the schema there).

import { ApiError, storePath } from "./api.js";
import { el, toast } from "./dom.js";

/** Each provider's fields in form order: [name, kind] with kind text | secret | pem | url. */
export const PROVIDER_FIELDS = {
  wechatpay: [
    ["mchid", "text"], ["appid", "text"], ["merchant_serial_no", "text"], ["merchant_private_key", "secret"],
    ["apiv3_key", "secret"], ["platform_serial_no", "text"], ["platform_public_key", "pem"], ["base_url", "url"],
  ],
  alipay: [
    ["app_id", "text"], ["app_private_key", "secret"], ["alipay_public_key", "pem"], ["gateway_url", "url"],
    ["seller_id", "text"],
  ],
};

/** The PUT body from the form's values: empty secrets are left out (the stored ones stay). */
export function settingsBody(provider, values) {
  const body = {};
  for (const [name, kind] of PROVIDER_FIELDS[provider]) {
    const value = (values[name] || "").trim();
    if (kind === "secret" && !value) continue;
    if (kind !== "secret" && !value && name === "seller_id") {
      body[name] = "";
      continue;
    }
    if (value) body[name] = value;
  }
  return body;
}

function providerCard(ctx, provider) {
  const { api, t, storeId } = ctx;
  const path = storePath(storeId, "payments", "providers", provider);
  const inputs = new Map();
  const status = el("p", { class: "form-status", testid: `pay-status-${provider}`, role: "status" });
  const notify = el("code", { class: "notify-url", testid: `pay-notify-${provider}` });
  const configured = el("span", { class: "badge", testid: `pay-configured-${provider}` });
  const form = el("form", { class: "card paysettings", testid: `pay-form-${provider}`, novalidate: true });
  const rows = PROVIDER_FIELDS[provider].map(([name, kind]) => {
    const id = `pay-${provider}-${name}`;
    const input = kind === "pem" || kind === "secret" && name.endsWith("private_key")
      ? el("textarea", { id, name, rows: 3, spellcheck: "false", autocomplete: "off", testid: id })
      : el("input", { id, name, type: kind === "secret" ? "password" : "text", spellcheck: "false",
        autocomplete: "off", testid: id });
    const state = el("small", { class: "secret-state", testid: `${id}-state` });
    inputs.set(name, { input, state, kind });
    return el("div", { class: "cfg-row" },
      el("label", { for: id, class: "cfg-label", text: t(`pay_field_${name}`) }),
      el("div", { class: "cfg-input" }, input),
      kind === "secret" ? state : null);
  });
  const save = el("button", { type: "submit", class: "primary", testid: `pay-save-${provider}`, text: t("save") });
  const test = el("button", { type: "button", class: "ghost", testid: `pay-test-${provider}`, text: t("pay_test") });
  form.append(
    el("header", { class: "card-head" }, el("h3", { text: t(`provider_${provider}`) }), configured),
    ...rows,
    el("div", { class: "cfg-row" }, el("span", { class: "cfg-label", text: t("pay_notify_url") }), notify),
    el("div", { class: "actions" }, test, save, status));

  function setStatus(text, state) {
    status.textContent = text;
    status.dataset.state = state;
  }

  function fill(view) {
    form.dataset.configured = view ? "1" : "0";
    configured.textContent = view ? t("pay_configured") : t("pay_not_configured");
    configured.className = view ? "badge ok" : "badge";
    notify.textContent = view ? view.notify_url : "";
    for (const [name, { input, state, kind }] of inputs) {
      const value = view ? view.settings[name] : undefined;
      if (kind === "secret") {
        input.value = ""; // never shown: the API does not have it to give
        const set = Boolean(value && value.set);
        state.textContent = set ? t("secret_set") : t("secret_unset");
        state.dataset.set = set ? "1" : "0";
        input.placeholder = set ? t("secret_keep") : "";
      } else {
        input.value = value === undefined || value === null ? "" : String(value);
      }
    }
  }

  async function load() {
    try {
      fill(await api.request("GET", path));
    } catch (e) {
      if (!(e instanceof ApiError) || e.status !== 404) throw e;
      fill(null);
    }
    form.dataset.ready = "1";
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const values = Object.fromEntries([...inputs].map(([name, { input }]) => [name, input.value]));
    save.disabled = true;
    setStatus(t("saving"), "saving");
    try {
      fill(await api.request("PUT", path, settingsBody(provider, values)));
      setStatus(t("saved"), "saved");
      toast(t("saved"));
    } catch (e) {
      if (!(e instanceof ApiError)) throw e;
      const fields = e.details.map((d) => (Array.isArray(d.loc) ? d.loc[d.loc.length - 1] : "")).filter(Boolean);
      setStatus(fields.length ? t("pay_invalid_fields", fields.join(", ")) : t("request_failed", e.text(ctx.lang)),
        "error");
    } finally {
      save.disabled = false;
    }
  });

  test.addEventListener("click", async () => {
    test.disabled = true;
    setStatus(t("pay_testing"), "saving");
    try {
      const answer = await api.request("POST", `${path}/test`);
      setStatus(answer.ok ? t("pay_test_ok") : t("pay_test_failed", answer.message), answer.ok ? "saved" : "error");
    } catch (e) {
      if (!(e instanceof ApiError)) throw e;
      setStatus(e.status === 404 ? t("pay_not_configured") : t("request_failed", e.text(ctx.lang)), "error");
    } finally {
      test.disabled = false;
    }
  });

  return { form, load };
}

export function mount(ctx, root) {
  const { t } = ctx;
  const cards = ["wechatpay", "alipay"].map((provider) => providerCard(ctx, provider));
  root.append(el("h2", { text: t("paysettings_title") }), el("p", { class: "muted", text: t("paysettings_intro") }),
    el("div", { class: "paycards", testid: "paysettings" }, cards.map((c) => c.form)));
  for (const card of cards) card.load().catch(ctx.fail);
  return () => {};
}
