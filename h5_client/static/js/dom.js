// The few DOM helpers the page's views share: elements built with textContent only (the CSP
// forbids inline script and the page never parses HTML), and a per-element memo of what was drawn.

/** The element with data-testid `id` under `root`. */
export const $ = (root, id) => root.querySelector(`[data-testid="${id}"]`);
const drawn = new WeakMap();

/** Whether `key` differs from what `el` was last drawn from (and remember it). */
export function changed(el, key) {
  const text = JSON.stringify(key);
  if (drawn.get(el) === text) return false;
  drawn.set(el, text);
  return true;
}

/** An element with attributes (`text` sets textContent, `class` the class) and children. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

/** Show or hide `node`. */
export function show(node, visible) {
  node.hidden = !visible;
}
