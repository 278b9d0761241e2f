// The live-source part of the page: the "camera / stream URL" input, and the source's state, lag and drops.

import { postJSON } from "./api.js";
import { $, el, showText } from "./dom.js";

const STATE_TEXT = { idle: "selected", connecting: "connecting…", live: "live", ended: "ended" };

function stateText(source) {
  if (source.state === "reconnecting") return `reconnecting (attempt ${source.attempt})`;
  return STATE_TEXT[source.state] || source.state;
}

function facts(source) {
  const parts = [source.url];
  if (source.width && source.height) parts.push(`${source.width}×${source.height}`);
  if (source.fps) parts.push(`${Number(source.fps).toFixed(source.fps % 1 ? 1 : 0)} fps`);
  if (source.lag_ms !== null && source.lag_ms !== undefined) parts.push(`lag ${Math.round(source.lag_ms)} ms`);
  if (source.state !== "idle") parts.push(`${source.drops} dropped`);
  return parts.join(" · ");
}

// Lag and drops also get tiles in the live-stats panel while a live source is selected.
function statTile(key, label) {
  let value = $(`stat-${key}`);
  if (!value) {
    const grid = document.querySelector(".stats .stat-grid");
    if (!grid) return null;
    value = el("dd", { id: `stat-${key}`, "data-testid": `stat-${key}` });
    grid.append(el("div", { "data-live": "" }, el("dt", { text: label }), value));
  }
  return value;
}

function renderStatTiles(source) {
  if (!source) {
    document.querySelectorAll(".stats .stat-grid [data-live]").forEach((tile) => tile.remove());
    return;
  }
  const running = source.state !== "idle" && source.state !== "ended";
  const lag = statTile("lag", "Lag (ms)");
  const drops = statTile("drops", "Source drops");  // frames the camera sent that were overtaken before use
  if (lag) lag.textContent = running && source.lag_ms !== null ? String(Math.round(source.lag_ms)) : "–";
  if (drops) drops.textContent = running ? String(source.drops) : "–";
}

export function renderSource(status) {
  const source = status && status.source;
  renderStatTiles(source);
  const info = $("source-info");
  info.hidden = !source;
  if (source) {
    const badge = $("source-state");
    badge.textContent = stateText(source);
    badge.dataset.state = source.state;
    $("source-facts").textContent = facts(source);
  }
  const streaming = Boolean(status && status.streaming);
  $("source-url").disabled = streaming;
  $("source-btn").disabled = streaming || !$("source-url").value.trim();
}

async function choose() {
  const url = $("source-url").value.trim();
  if (!url) return;
  const button = $("source-btn");
  button.disabled = true;
  showText($("source-error"), "");
  button.textContent = "Checking…";
  try {
    const data = await postJSON("/source", { url });
    $("source-url").value = "";  // it may hold a password: do not leave it on screen
    renderSource({ source: data.source, streaming: false });
  } catch (error) {
    showText($("source-error"), error.message);
  } finally {
    button.textContent = "Use";
    button.disabled = !$("source-url").value.trim();
  }
}

export function setupSource() {
  $("source-form").addEventListener("submit", (event) => { event.preventDefault(); choose(); });
  $("source-url").addEventListener("input", () => { $("source-btn").disabled = !$("source-url").value.trim(); });
}
