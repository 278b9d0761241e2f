// The live-source part of the page: the "camera / stream URL" input and the source's state, lag and drops.
// app.js calls window.edgeSource.render(status) on every status poll.
(() => {
  "use strict";

  const $ = (id) => document.getElementById(id);
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
      const tile = document.createElement("div");
      tile.dataset.live = "";
      const term = document.createElement("dt");
      term.textContent = label;
      value = document.createElement("dd");
      value.id = `stat-${key}`;
      value.dataset.testid = `stat-${key}`;
      tile.append(term, value);
      grid.append(tile);
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

  function render(status) {
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

  function showError(text) {
    const node = $("source-error");
    node.textContent = text || "";
    node.hidden = !text;
  }

  async function choose() {
    const url = $("source-url").value.trim();
    if (!url) return;
    const button = $("source-btn");
    button.disabled = true;
    showError("");
    button.textContent = "Checking…";
    try {
      const response = await fetch("/source", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ url }),
      });
      const data = await response.json().catch(() => ({}));
      if (!response.ok) throw new Error(data.error || `HTTP ${response.status}`);
      $("source-url").value = "";  // it may hold a password: do not leave it on screen
      render({ source: data.source, streaming: false });
    } catch (error) {
      showError(error.message);
    } finally {
      button.textContent = "Use";
      button.disabled = !$("source-url").value.trim();
    }
  }

  function init() {
    $("source-form").addEventListener("submit", (event) => { event.preventDefault(); choose(); });
    $("source-url").addEventListener("input", () => { $("source-btn").disabled = !$("source-url").value.trim(); });
  }

  window.edgeSource = { render };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
