// Tables and their QR codes: create, show each code (the PNG fetched with the admin token and
// shown through a blob URL), a printable sheet of every code, and rotation of the store's secret.

import { storePath } from "./api.js";
import { confirmDialog, el, toast } from "./dom.js";
import { ID_PATTERN } from "./stores.js";

export function mount(ctx, root) {
  const { api, t, storeId } = ctx;
  let urls = []; // blob URLs of the current codes, revoked when replaced or on leaving
  let stopped = false;

  const idInput = el("input", { testid: "table-id-input", name: "table_id", autocomplete: "off", maxlength: 64 });
  const nameInput = el("input", { testid: "table-name-input", name: "name", autocomplete: "off", maxlength: 100 });
  const idError = el("p", { class: "field-error", testid: "table-id-error", hidden: true });
  const nameError = el("p", { class: "field-error", testid: "table-name-error", hidden: true });
  const form = el("form", { class: "card form-row", testid: "table-form", novalidate: true },
    el("div", { class: "fields" },
      el("label", {}, el("span", { text: t("table_id") }), idInput, el("small", { class: "muted", text: t("id_hint") }), idError),
      el("label", {}, el("span", { text: t("table_name") }), nameInput, nameError)),
    el("button", { type: "submit", class: "primary", testid: "table-create", text: t("table_save") }));
  const printButton = el("button", { type: "button", class: "primary", testid: "print-all", text: t("print_all") });
  const previewButton = el("button", { type: "button", class: "ghost", testid: "print-preview", text: t("print_preview") });
  const rotateButton = el("button", { type: "button", class: "danger", testid: "qr-rotate", text: t("rotate") });
  const grid = el("div", { class: "qr-grid", testid: "tables-list" }, el("p", { class: "muted", text: t("loading") }));
  const sheet = el("section", { class: "print-sheet", testid: "print-sheet", hidden: true });
  root.append(
    el("h2", { text: t("tables_title") }), el("p", { class: "muted", text: t("tables_intro") }),
    form,
    el("div", { class: "toolbar no-print" }, printButton, previewButton, el("span", { class: "spacer" }), rotateButton),
    grid, sheet);

  function release() {
    for (const url of urls) URL.revokeObjectURL(url);
    urls = [];
  }

  async function qrUrl(tableId) {
    const blob = await api.blob(storePath(storeId, "tables", tableId, "qr.png"));
    const url = URL.createObjectURL(blob);
    urls.push(url);
    return url;
  }

  async function load() {
    const [{ tables }, store] = await Promise.all([api.request("GET", storePath(storeId, "tables")), ctx.store()]);
    if (stopped) return;
    release();
    if (tables.length === 0) {
      grid.replaceChildren(el("p", { class: "empty", testid: "tables-empty", text: t("tables_empty") }));
      sheet.replaceChildren();
      printButton.disabled = previewButton.disabled = true;
      return;
    }
    printButton.disabled = previewButton.disabled = false;
    const cards = [];
    const labels = [];
    for (const table of tables) {
      const img = el("img", { class: "qr", testid: "table-qr", alt: `QR ${table.name}`, dataset: { state: "loading" } });
      const download = el("a", { class: "button ghost small", testid: "table-qr-download", text: t("qr_download"),
        download: `${storeId}-${table.table_id}.png`, "aria-disabled": "true" });
      cards.push(el("figure", { class: "card table-card", testid: "table-card", dataset: { tableId: table.table_id } },
        img,
        el("figcaption", {},
          el("div", { class: "table-name", testid: "table-name", text: table.name }),
          el("div", { class: "mono muted", text: table.table_id }),
          el("a", { class: "qr-link mono", testid: "table-qr-url", href: table.qr_url, target: "_blank", rel: "noopener", text: table.qr_url }),
          download)));
      const printed = el("img", { class: "qr", testid: "print-qr", alt: `QR ${table.name}`, dataset: { state: "loading" } });
      labels.push(el("figure", { class: "print-label", testid: "print-label", dataset: { tableId: table.table_id } },
        el("div", { class: "print-store", text: store.name }),
        printed,
        el("div", { class: "print-table", text: table.name }),
        // Diners read either language: the printed caption carries both.
        el("div", { class: "print-caption", text: "扫码点餐 · Scan to order" })));
      qrUrl(table.table_id).then((url) => {
        for (const node of [img, printed]) {
          node.src = url;
          node.dataset.state = "ready";
        }
        download.href = url;
        download.removeAttribute("aria-disabled");
      }, (e) => {
        img.dataset.state = printed.dataset.state = "error";
        img.alt = t("qr_failed");
        ctx.fail(e);
      });
    }
    grid.replaceChildren(...cards);
    sheet.replaceChildren(...labels);
  }

  /** Resolve once every code on the print sheet has loaded (or failed), bounded. */
  function sheetReady() {
    const images = [...sheet.querySelectorAll("img")];
    return Promise.race([
      Promise.all(images.map((img) => (img.complete && img.dataset.state !== "loading"
        ? Promise.resolve()
        : new Promise((resolve) => {
          img.addEventListener("load", resolve, { once: true });
          img.addEventListener("error", resolve, { once: true });
        })))),
      new Promise((resolve) => setTimeout(resolve, 5000)),
    ]);
  }

  function setPreview(on) {
    sheet.hidden = !on;
    document.body.classList.toggle("previewing", on);
    previewButton.textContent = on ? t("close_preview") : t("print_preview");
  }

  previewButton.addEventListener("click", () => setPreview(sheet.hidden));
  printButton.addEventListener("click", async () => {
    await sheetReady();
    window.print();
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const tableId = idInput.value.trim();
    const name = nameInput.value.trim();
    idError.textContent = t("id_invalid");
    idError.hidden = ID_PATTERN.test(tableId);
    nameError.textContent = t("name_required");
    nameError.hidden = Boolean(name);
    if (!idError.hidden || !nameError.hidden) return;
    try {
      const table = await api.request("PUT", storePath(storeId, "tables", tableId), { name });
      form.reset();
      toast(t("table_saved", table.name));
      await load();
    } catch (e) {
      ctx.fail(e);
    }
  });

  rotateButton.addEventListener("click", async () => {
    const ok = await confirmDialog({ title: t("rotate_title"), text: t("rotate_text"), ok: t("rotate_ok") });
    if (!ok) return;
    try {
      await api.request("POST", storePath(storeId, "qr", "rotate"));
      toast(t("rotated"));
      await load();
    } catch (e) {
      ctx.fail(e);
    }
  });

  load().catch(ctx.fail);
  return () => {
    stopped = true;
    setPreview(false);
    release();
  };
}
