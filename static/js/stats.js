// The live-stats panel: counters, the per-stage latency bar (stage names come from the server's status),
// and the Record trace button.

import { getBlob } from "./api.js";
import { renderControls } from "./controls.js";
import { $, el, formatNumber } from "./dom.js";
import { page } from "./page.js";

const TRACE_FRAMES = 60;

// Stop and reset clear the server's numbers: idle shows dashes. A stream that ended by itself keeps its
// counts (how far it got), but nothing runs any more, so no rate and no viewers.
function shownStats(status) {
  const stats = status && status.stats;
  if (!status || status.streaming) return stats;
  if (stats && stats.frames > 0) return { ...stats, fps: null, viewers: null };
  return null;
}

// One bar segment and one legend entry per stage, rebuilt only when the server's list changes.
function buildStages(stages) {
  const bar = $("latency-bar");
  if (bar.dataset.stages === stages.join(" ")) return;
  bar.dataset.stages = stages.join(" ");
  bar.replaceChildren(...stages.map((stage) => el("span", { class: `s-${stage}`, "data-stage": stage })));
  $("latency-legend").replaceChildren(...stages.map((stage) =>
    el("li", {}, el("i", { class: `s-${stage}` }), stage, " ", el("b", { "data-stage": stage, text: "–" }))));
}

function renderLatency(latency, stages) {
  buildStages(stages);
  const parts = stages.map((stage) => [stage, Number(latency[stage]) || 0]);
  const sum = parts.reduce((acc, [, ms]) => acc + ms, 0);
  const total = Number(latency.total) || sum;
  $("latency-total").textContent = total > 0 ? total.toFixed(1) : "–";

  const bar = $("latency-bar");
  for (const [stage, ms] of parts) {
    const segment = bar.querySelector(`[data-stage="${stage}"]`);
    segment.style.width = sum > 0 ? `${(ms / sum) * 100}%` : "0";
    segment.title = `${stage}: ${ms.toFixed(1)} ms`;
    $("latency-legend").querySelector(`b[data-stage="${stage}"]`).textContent = sum > 0 ? `${ms.toFixed(1)} ms` : "–";
  }
  bar.setAttribute("aria-label", sum > 0
    ? `Per-stage latency: ${parts.map(([stage, ms]) => `${stage} ${ms.toFixed(1)} ms`).join(", ")}`
    : "Per-stage latency: no data yet");
}

export function renderStats(status) {
  const stats = shownStats(status) || {};
  $("stat-fps").textContent = formatNumber(stats.fps, 1);
  $("stat-frames").textContent = formatNumber(stats.frames);
  $("stat-detections").textContent = formatNumber(stats.detections);
  $("stat-viewers").textContent = formatNumber(stats.viewers);
  $("stat-latency").textContent = formatNumber(stats.frame_latency_ms, 1);
  $("stat-dropped").textContent = formatNumber(stats.dropped);
  const keyframes = stats.keyframes || {};
  $("stat-keyframes").textContent = keyframes.per_s === undefined ? "–"
    : `${formatNumber(keyframes.per_s, 1)} (${formatNumber(keyframes.per_frame, 2)}/frame)`;
  $("stat-added-delay").textContent = keyframes.interpolating ? formatNumber(keyframes.added_delay_ms, 0)
    : (keyframes.per_s === undefined ? "–" : "0");
  renderLatency(stats.latency_ms || {}, (status && status.stages) || []);
}

function save(blob, name) {
  const link = el("a", { href: URL.createObjectURL(blob), download: name });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
}

async function recordTrace() {
  page.tracing = true;
  renderControls();
  const hint = $("trace-hint");
  hint.textContent = `Recording ${TRACE_FRAMES} frames…`;
  try {
    save(await getBlob(`/api/trace?frames=${TRACE_FRAMES}`), "edge-detect-trace.json");
    hint.textContent = "Saved edge-detect-trace.json: open it in ui.perfetto.dev or chrome://tracing";
  } catch (error) {
    hint.textContent = `Trace failed: ${error.message}`;
  } finally {
    page.tracing = false;
    renderControls();
  }
}

export function setupStats() {
  $("trace-btn").addEventListener("click", recordTrace);
  renderStats(null);
}
