// ERP terminals: register (the token is shown once), see who is online, revoke.
//
// The admin token has no websocket (SPEC §7 sockets are for terminals and diners), so the online
// column is polled: GET .../terminals every POLL_MS while this view is open.

import { storePath } from "./api.js";
import { dateTime } from "./format.js";
import { confirmDialog, copyText, el, table, toast } from "./dom.js";

const POLL_MS = 2000;

export function mount(ctx, root) {
  const { api, t, storeId } = ctx;
  const path = storePath(storeId, "terminals");
  let stopped = false;
  let timer = null;

  const nameInput = el("input", { testid: "term-name", name: "name", autocomplete: "off", maxlength: 100 });
  const masterInput = el("input", { type: "checkbox", testid: "term-master", name: "master" });
  const nameError = el("p", { class: "field-error", testid: "term-name-error", hidden: true });
  const form = el("form", { class: "card form-row", testid: "terminal-form", novalidate: true },
    el("div", { class: "fields" },
      el("label", {}, el("span", { text: t("terminal_name") }), nameInput, nameError),
      el("label", { class: "check" }, masterInput, el("span", { text: t("master") }),
        el("small", { class: "muted", text: t("master_hint") }))),
    el("button", { type: "submit", class: "primary", testid: "term-register", text: t("register") }));
  const tokenSlot = el("div", { testid: "token-slot" });
  const list = el("div", { testid: "terminals-list" }, el("p", { class: "muted", text: t("loading") }));
  const live = el("p", { class: "live-note", testid: "terminals-live", text: t("live_poll", POLL_MS / 1000) });
  root.append(el("h2", { text: t("terminals_title") }), el("p", { class: "muted", text: t("terminals_intro") }),
    form, tokenSlot, el("div", { class: "card" }, live, list));

  function render(terminals) {
    if (terminals.length === 0) {
      list.replaceChildren(el("p", { class: "empty", testid: "terminals-empty", text: t("terminals_empty") }));
      return;
    }
    list.replaceChildren(table("terminals-table",
      [t("terminal_name"), t("terminal_id"), t("master"), t("status"), t("created_at"), t("actions")],
      terminals.map((term) => el("tr", { testid: "terminal-row", dataset: { terminalId: term.terminal_id, online: term.online ? "1" : "0" } },
        el("td", { testid: "terminal-name", text: term.name }),
        el("td", { class: "mono", text: term.terminal_id }),
        el("td", {}, term.master ? el("span", { class: "badge master", testid: "terminal-master", text: t("master") }) : "—"),
        el("td", {}, el("span", {
          class: `dot ${term.online ? "on" : "off"}`, testid: "terminal-online", dataset: { online: term.online ? "1" : "0" },
          text: term.online ? t("online") : t("offline"),
        })),
        el("td", { text: dateTime(term.created_at) }),
        el("td", {}, el("button", {
          type: "button", class: "danger small", testid: "terminal-revoke", text: t("revoke"),
          on: { click: () => revoke(term) },
        }))))));
  }

  async function load() {
    const { terminals } = await api.request("GET", path);
    if (!stopped) render(terminals);
  }

  async function poll() {
    try {
      await load();
      live.dataset.state = "live";
    } catch (e) {
      live.dataset.state = "error";
      if (e.status === 401 || e.status === 404) return; // signed out / store gone: stop polling
    }
    if (!stopped) timer = setTimeout(poll, POLL_MS);
  }

  function showToken(created) {
    const tokenInput = el("input", { readonly: true, class: "mono token", testid: "token-value", value: created.token });
    const copyButton = el("button", { type: "button", class: "primary", testid: "token-copy", text: t("copy") });
    copyButton.addEventListener("click", async () => {
      const ok = await copyText(created.token, tokenInput);
      copyButton.textContent = ok ? t("copied") : t("copy");
      if (!ok) toast(t("copy_failed"), "error");
    });
    const panel = el("div", { class: "card token-panel", testid: "token-panel", dataset: { terminalId: created.terminal_id } },
      el("h3", { text: `${t("token_once_title")} · ${created.name}` }),
      el("p", { class: "warning", testid: "token-warning", role: "alert", text: t("token_once_warning") }),
      el("div", { class: "token-row" }, tokenInput, copyButton),
      el("button", { type: "button", class: "ghost", testid: "token-dismiss", text: t("token_saved"),
        on: { click: () => panel.remove() } }));
    tokenSlot.replaceChildren(panel);
    tokenInput.addEventListener("focus", () => tokenInput.select());
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const name = nameInput.value.trim();
    nameError.textContent = t("name_required");
    nameError.hidden = Boolean(name);
    if (!name) return;
    try {
      const created = await api.request("POST", path, { name, master: masterInput.checked });
      showToken(created);
      form.reset();
      toast(t("registered", created.name));
      await load();
    } catch (e) {
      ctx.fail(e);
    }
  });

  async function revoke(term) {
    const ok = await confirmDialog({
      title: t("revoke_title"), text: t("revoke_text", term.name, term.terminal_id), ok: t("revoke"),
    });
    if (!ok) return;
    try {
      await api.request("DELETE", storePath(storeId, "terminals", term.terminal_id));
      toast(t("revoked", term.name));
      await load();
    } catch (e) {
      ctx.fail(e);
    }
  }

  poll();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
