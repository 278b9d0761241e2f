// Small DOM and formatting helpers every part of the page uses.

export const $ = (id) => document.getElementById(id);

// el("div", { class: "x", text: "hi", onclick: fn, hidden: true }, child, ...): attributes that are null,
// undefined or false are left out; "on..." keys add listeners (no inline handlers: the CSP forbids them).
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value === true) node.setAttribute(key, "");
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

// Show text in node, or hide node when there is none.
export function showText(node, text) {
  node.textContent = text || "";
  node.hidden = !text;
}

export function formatNumber(value, digits = 0) {
  return Number.isFinite(value) ? value.toFixed(digits) : "–";
}

export function formatDuration(seconds) {
  if (!Number.isFinite(seconds) || seconds < 0) return "unknown length";
  const total = Math.round(seconds);
  const minutes = Math.floor(total / 60);
  return `${minutes}:${String(total % 60).padStart(2, "0")}`;
}

export function formatSize(bytes) {
  if (!Number.isFinite(bytes)) return "";
  const mb = bytes / (1024 * 1024);
  return `${mb < 10 ? mb.toFixed(2) : mb.toFixed(1)} MB`;
}
