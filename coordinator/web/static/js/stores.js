// Stores: the list, and a form to create one (PUT /admin/stores/{store_id}).

import { dateTime } from "./format.js";
import { el, table, toast } from "./dom.js";

export const ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

export function mount(ctx, root) {
  const { api, t } = ctx;
  const list = el("div", { testid: "stores-list" }, el("p", { class: "muted", text: t("loading") }));
  const idInput = el("input", { testid: "store-id-input", name: "store_id", autocomplete: "off", maxlength: 64 });
  const nameInput = el("input", { testid: "store-name-input", name: "name", autocomplete: "off", maxlength: 100 });
  const idError = el("p", { class: "field-error", testid: "store-id-error", hidden: true });
  const nameError = el("p", { class: "field-error", testid: "store-name-error", hidden: true });
  const form = el("form", { class: "card form-row", testid: "store-form", novalidate: true },
    el("h3", { text: t("store_create_title") }),
    el("div", { class: "fields" },
      el("label", {}, el("span", { text: t("store_id") }), idInput, el("small", { class: "muted", text: t("id_hint") }), idError),
      el("label", {}, el("span", { text: t("store_name") }), nameInput, nameError)),
    el("button", { type: "submit", class: "primary", testid: "store-create", text: t("store_create") }));

  root.append(el("h2", { text: t("stores_title") }), list, form);

  async function load() {
    const { stores } = await api.request("GET", "/admin/stores");
    list.replaceChildren(stores.length === 0
      ? el("p", { class: "empty", testid: "stores-empty", text: t("stores_empty") })
      : table("stores-table", [t("store_id"), t("store_name"), t("created_at"), ""], stores.map((s) =>
        el("tr", { testid: "store-row", dataset: { storeId: s.store_id } },
          el("td", { class: "mono", text: s.store_id }),
          el("td", { text: s.name }),
          el("td", { text: dateTime(s.created_at) }),
          el("td", {}, el("a", { class: "button", href: ctx.href(s.store_id, "config"), testid: "store-open", text: t("open") }))))));
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const storeId = idInput.value.trim();
    const name = nameInput.value.trim();
    idError.hidden = ID_PATTERN.test(storeId);
    idError.textContent = t("id_invalid");
    nameError.hidden = Boolean(name);
    nameError.textContent = t("name_required");
    if (!idError.hidden || !nameError.hidden) return;
    try {
      await api.request("PUT", `/admin/stores/${encodeURIComponent(storeId)}`, { name });
      toast(t("store_created", name));
      ctx.navigate(storeId, "config");
    } catch (e) {
      ctx.fail(e);
    }
  });

  load().catch(ctx.fail);
  return () => {};
}
