// Store configuration (SPEC §6): the strong-link switch and every duration, each with its range.
//
// The ranges and defaults come from the coordinator's OpenAPI document (the StoreConfig schema),
// so the page and the server cannot disagree. They are checked here before sending, and the
// server checks them again: a 400's `details` are shown next to the field they name.
// Only changed keys are sent (PATCH), so two admins editing different keys do not undo each other.

import { ApiError, storePath } from "./api.js";
import { el, toast } from "./dom.js";

/** The configuration keys in the order the form shows them; `unit` of each duration. */
export const DURATIONS = [
  ["h5_payment_lock_seconds", "unit_seconds"],
  ["erp_payment_lock_seconds", "unit_seconds"],
  ["order_lock_seconds", "unit_seconds"],
  ["presettle_lock_seconds", "unit_seconds"],
  ["erp_disconnect_grace_seconds", "unit_seconds"],
  ["erp_rpc_timeout_ms", "unit_ms"],
  ["h5_payment_window_seconds", "unit_seconds"],
];

/** Why `input`'s value is not acceptable, or null; the bounds are the input's own min/max. */
export function fieldProblem(input, unit, t) {
  const raw = input.value.trim();
  if (!/^-?\d+$/.test(raw)) return t("not_integer");
  const value = Number(raw);
  const min = input.min === "" ? -Infinity : Number(input.min);
  const max = input.max === "" ? Infinity : Number(input.max);
  if (value < min || value > max) return t("out_of_range", input.min, input.max, unit);
  return null;
}

export function mount(ctx, root) {
  const { api, t, storeId } = ctx;
  const path = storePath(storeId, "config");
  let current = null;
  const fields = new Map(); // key → {input, error, unit}

  const status = el("p", { class: "form-status", testid: "config-status", role: "status" });
  const saveButton = el("button", { type: "submit", class: "primary", testid: "config-save", text: t("save") });
  const resetButton = el("button", { type: "button", class: "ghost", testid: "config-reset", text: t("reset") });
  const switchInput = el("input", { type: "checkbox", role: "switch", testid: "cfg-strong_link_enabled" });
  const switchState = el("span", { class: "switch-state", testid: "strong-link-state" });
  const refundInput = el("input", { type: "checkbox", role: "switch", testid: "cfg-auto_refund_surplus" });
  const refundState = el("span", { class: "switch-state", testid: "auto-refund-state" });
  const form = el("form", { class: "card config", testid: "config-form", novalidate: true });
  root.append(el("h2", { text: t("config_title") }), el("p", { class: "muted", text: t("config_intro") }), form);
  form.append(el("p", { class: "muted", text: t("loading") }));

  function setStatus(text, state) {
    status.textContent = text;
    status.dataset.state = state;
  }

  function showError(key, text, source) {
    const field = fields.get(key);
    if (!field) return false;
    field.error.textContent = text || "";
    field.error.hidden = !text;
    field.error.dataset.source = source || "";
    field.input.setAttribute("aria-invalid", text ? "true" : "false");
    field.row.classList.toggle("invalid", Boolean(text));
    return true;
  }

  function fill(config) {
    current = config;
    switchInput.checked = Boolean(config.strong_link_enabled);
    switchState.textContent = switchInput.checked ? t("on") : t("off");
    refundInput.checked = Boolean(config.auto_refund_surplus);
    refundState.textContent = refundInput.checked ? t("on") : t("off");
    for (const [key, field] of fields) {
      field.input.value = String(config[key]);
      showError(key, null);
    }
  }

  function build(schema) {
    const props = schema.properties;
    form.replaceChildren(
      el("div", { class: "cfg-row switch-row", testid: "row-strong_link_enabled" },
        el("label", { class: "switch" }, switchInput, el("span", { class: "slider", "aria-hidden": "true" }),
          el("span", { class: "cfg-label", text: t("strong_link_enabled") }), switchState),
        el("small", { class: "muted", text: t("strong_link_hint") })));
    switchInput.addEventListener("change", () => {
      switchState.textContent = switchInput.checked ? t("on") : t("off");
    });
    for (const [key, unitKey] of DURATIONS) {
      const spec = props[key] || {};
      const unit = t(unitKey);
      const input = el("input", {
        type: "number", inputmode: "numeric", step: 1, name: key, testid: `cfg-${key}`, id: `cfg-${key}`,
        min: spec.minimum, max: spec.maximum, required: true,
      });
      const error = el("p", { class: "field-error", testid: `error-${key}`, role: "alert", hidden: true });
      const row = el("div", { class: "cfg-row", testid: `row-${key}` },
        el("label", { for: `cfg-${key}`, class: "cfg-label", text: t(key) }),
        el("div", { class: "cfg-input" }, input, el("span", { class: "unit", text: unit })),
        el("small", { class: "range", testid: `range-${key}`, text: t("range", spec.minimum, spec.maximum, unit, spec.default) }),
        el("small", { class: "muted hint", text: t(`${key}_hint`) }),
        error);
      input.addEventListener("input", () => showError(key, fieldProblem(input, unit, t), "client"));
      fields.set(key, { input, error, unit, row });
      form.append(row);
    }
    form.append(el("div", { class: "cfg-row switch-row", testid: "row-auto_refund_surplus" },
      el("label", { class: "switch" }, refundInput, el("span", { class: "slider", "aria-hidden": "true" }),
        el("span", { class: "cfg-label", text: t("auto_refund_surplus") }), refundState),
      el("small", { class: "muted", text: t("auto_refund_surplus_hint") })));
    refundInput.addEventListener("change", () => {
      refundState.textContent = refundInput.checked ? t("on") : t("off");
    });
    form.append(el("div", { class: "actions" }, resetButton, saveButton, status));
  }

  /** The keys whose value differs from what was loaded, or null if a field is invalid. */
  function changes() {
    const out = {};
    let valid = true;
    for (const [key, field] of fields) {
      const problem = fieldProblem(field.input, field.unit, t);
      showError(key, problem, "client");
      if (problem) {
        valid = false;
        continue;
      }
      const value = Number(field.input.value.trim());
      if (value !== current[key]) out[key] = value;
    }
    if (switchInput.checked !== current.strong_link_enabled) out.strong_link_enabled = switchInput.checked;
    if (refundInput.checked !== current.auto_refund_surplus) out.auto_refund_surplus = refundInput.checked;
    return valid ? out : null;
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const patch = changes();
    if (patch === null) {
      setStatus(t("fix_errors"), "invalid");
      const first = [...fields.values()].find((f) => !f.error.hidden);
      if (first) first.input.focus();
      return;
    }
    if (Object.keys(patch).length === 0) {
      setStatus(t("nothing_changed"), "unchanged");
      return;
    }
    saveButton.disabled = true;
    setStatus(t("saving"), "saving");
    try {
      fill(await api.request("PATCH", path, patch));
      setStatus(t("saved"), "saved");
      toast(t("saved"));
    } catch (e) {
      if (!(e instanceof ApiError)) throw e;
      let shown = false;
      for (const detail of e.details) {
        const key = Array.isArray(detail.loc) ? detail.loc[0] : null;
        shown = showError(key, t("server_refused", detail.msg), "server") || shown;
      }
      setStatus(shown ? t("fix_errors") : t("request_failed", e.text(ctx.lang)), "error");
      if (!shown) ctx.fail(e);
    } finally {
      saveButton.disabled = false;
    }
  });

  resetButton.addEventListener("click", () => {
    if (current) fill(current);
    setStatus("", "");
  });

  (async () => {
    const [doc, config] = await Promise.all([api.openapi(), api.request("GET", path)]);
    build(doc.components.schemas.StoreConfig);
    fill(config);
    form.dataset.ready = "1";
  })().catch(ctx.fail);

  return () => {};
}
