// Building the console's DOM without a framework: `el(tag, props, ...children)`, plus the two
// shared pieces of chrome every view uses (the confirm dialog and the toast).

/**
 * Create an element. `props`: `testid`, `class`, `text`, `dataset` ({...}), `on` ({event: fn}),
 * and any other key set as an attribute (`false`/null/undefined skip it, `true` sets it empty).
 */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "testid") node.dataset.testid = value;
    else if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "on") for (const [event, fn] of Object.entries(value)) node.addEventListener(event, fn);
    else if (key === "value") node.value = value;
    else if (key === "checked") node.checked = Boolean(value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** A table with a header row; `rows` are `<tr>` elements. */
export function table(testid, headers, rows) {
  return el("table", { class: "grid", testid },
    el("thead", {}, el("tr", {}, headers.map((h) => el("th", { text: h })))),
    el("tbody", {}, rows));
}

/** Ask the admin to confirm a destructive action in the console's `<dialog>`; resolves true on OK. */
export function confirmDialog({ title, text, ok }) {
  const dialog = document.querySelector('[data-testid="confirm-dialog"]');
  dialog.querySelector('[data-testid="confirm-title"]').textContent = title;
  dialog.querySelector('[data-testid="confirm-text"]').textContent = text;
  dialog.querySelector('[data-testid="confirm-ok"]').textContent = ok;
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.showModal();
  });
}

let toastTimer = null;

/** Show a short message at the bottom of the page (`kind`: ok | error). */
export function toast(text, kind = "ok") {
  const node = document.querySelector('[data-testid="toast"]');
  node.textContent = text;
  node.dataset.kind = kind;
  node.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => {
    node.hidden = true;
  }, 4000);
}

/** Copy `text` to the clipboard; falls back to selecting `input` and execCommand. */
export async function copyText(text, input) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch (e) {
    if (!input) return false;
    input.focus();
    input.select();
    try {
      return document.execCommand("copy");
    } catch (err) {
      return false;
    }
  }
}
