// Under the engine setting: what actually runs (auto's pick, or fp32 until the device's engine timing is done)
// and the table of what this device measured: every engine x precision x threads, with a button to force one.

import { postJSON } from "./api.js";
import { $, el, formatNumber } from "./dom.js";
import { page, renderAll } from "./page.js";

const table = {
  signature: "",
  open: true,  // the timing table starts open; a person who folds it away keeps it folded
};

function formatSpeedup(speedup) {
  return Number.isFinite(speedup) ? `${speedup.toFixed(1)}×` : "–";
}

function timingFailure(status) {
  return status.error && /engine timing/i.test(status.error) ? status.error : "";
}

function waitingReason(status) {
  const precision = status.precision || {};
  if (precision.building) return "the engines are being timed on this device…";
  if (timingFailure(status)) return timingFailure(status);
  if (status.video && status.model) return "the engines will be timed when the stream starts";
  return "the engines will be timed once a video and a model are uploaded";
}

const ENGINE_NAMES = { onnxruntime: "ONNX Runtime", ncnn: "NCNN" };
const engineName = (engine) => ENGINE_NAMES[engine] || engine;

// One sentence on what actually runs.
function precisionSentence(status) {
  const precision = status.precision || {};
  const report = precision.timing;
  const running = `${engineName(precision.engine)} ${String(precision.active || "fp32").toUpperCase()}`
    + (precision.threads ? `, ${precision.threads} threads` : "");
  if (status.settings.engine === "auto") {
    if (report && report.auto && report.auto.engine) {
      return { kind: "measured", text: `Auto: running ${running} — ${report.auto.why}` };
    }
    return { kind: precision.building ? "timing" : "waiting",
      text: `Auto: running ${running} — ${waitingReason(status)}` };
  }
  const chosen = report && (report.rows || []).find((row) => row.chosen);
  const speed = chosen && Number.isFinite(chosen.speedup)
    ? `${formatSpeedup(chosen.speedup)} ${chosen.speedup >= 1 ? "faster than" : "the speed of"} FP32` : "";
  const agreement = chosen && Number.isFinite(chosen.agreement) ? `agreement ${chosen.agreement.toFixed(2)}` : "";
  if (precision.active === "int8" && precision.engine === "onnxruntime" && report) {
    const facts = [`recipe ${report.chosen}`, speed, agreement].filter(Boolean).join(", ");
    const warning = report.qualified ? ""
      : ` — below the ${Number(report.min_agreement).toFixed(2)} agreement bar, so boxes may differ from FP32`;
    return { kind: "measured", text: `Running ONNX Runtime INT8 (${facts})${warning}` };
  }
  if (status.settings.precision !== "int8" || status.settings.engine !== "onnxruntime") {
    return { kind: "fp32", text: `Running ${running}` };
  }
  return { kind: precision.building ? "timing" : "waiting", text: `Running ${running} — ${waitingReason(status)}` };
}

// Forcing a row: the engine, precision and threads it ran with become the settings.
async function useRow(row, button) {
  button.disabled = true;
  try {
    const settings = await postJSON("/api/settings",
      { engine: row.engine, precision: row.precision, ...(row.threads ? { threads: row.threads } : {}) });
    if (page.status) page.status.settings = settings;
    renderAll();
  } catch (error) {
    button.title = error.message;
    button.textContent = "refused";
  } finally {
    button.disabled = false;
  }
}

function isRunning(row, status) {
  const precision = status.precision || {};
  return row.engine === precision.engine && row.precision === precision.active
    && (!row.threads || row.threads === precision.threads);
}

// One row per engine x precision x threads timed; ✓ marks auto's pick, the button forces the row.
function timingRow(row, report, status) {
  const failed = Boolean(row.error);
  const below = !failed && Number.isFinite(row.agreement) && row.agreement < report.min_agreement;
  const recipe = row.engine === "onnxruntime" && row.precision === "int8" ? ` ${row.recipe}` : "";
  const name = el("th", { scope: "row" },
    row.picked ? el("span", { class: "mark", "aria-hidden": "true", text: "✓ " }) : null,
    `${engineName(row.engine)} ${row.precision.toUpperCase()}${recipe}`,
    row.picked ? el("span", { class: "visually-hidden", text: " (auto's choice)" }) : null);
  const usable = !failed && (row.engine !== "onnxruntime" || row.precision !== "int8" || row.chosen);
  const button = el("button", { type: "button", class: "use-row", "data-testid": "use-row",
    text: isRunning(row, status) && status.settings.engine !== "auto" ? "in use" : "Use" });
  button.disabled = !usable;
  button.addEventListener("click", () => useRow(row, button));
  return el("tr", { class: row.picked ? "chosen" : failed ? "failed" : null, "data-row": row.recipe,
    "data-testid": "engine-row" },
    name,
    el("td", { text: row.threads ? String(row.threads) : "–" }),
    el("td", { text: failed ? "failed" : formatNumber(row.ms, 1) }),
    el("td", { text: formatSpeedup(row.speedup) }),
    el("td", { class: below ? "below" : null, title: below ? "too different from FP32" : null,
      text: formatNumber(row.agreement, 2) }),
    el("td", { class: "why", text: row.why || "" }),
    el("td", {}, button));
}

function timingTable(report, status) {
  return el("table", { id: "timing-table", class: "timing-table", "data-testid": "timing-table" },
    el("thead", {}, el("tr", {},
      ...["Engine", "Threads", "ms", "Speed-up", "Agree\u00ADment", "Why", ""]
        .map((name) => el("th", { scope: "col", text: name })))),
    el("tbody", {}, ...(report.rows || []).map((row) => timingRow(row, report, status))));
}

function timingDetails(report, status) {
  const failures = (report.rows || []).filter((row) => row.error);
  const details = el("details", { class: "timing", "data-testid": "engine-timing", open: table.open },
    el("summary", { text: "What this device measured" }),
    el("div", { class: "table-scroll", role: "region", "aria-label": "Engine timing results", tabindex: "0" },
      timingTable(report, status)),
    failures.length ? el("ul", { class: "timing-errors", "data-testid": "timing-errors" },
      ...failures.map((row) => el("li", {}, el("b", { text: row.recipe }), ` could not be used: ${row.error}`))) : null,
    el("p", { id: "timing-note", class: "timing-note", "data-testid": "timing-note", text: report.note }),
    el("p", { class: "timing-facts",
      text: `✓ marks what Auto runs. Agreement is how closely a row's boxes match ONNX Runtime FP32's; `
        + `${Number(report.min_agreement).toFixed(2)} is needed to qualify (lower ones in orange). `
        + `Timed at ${report.imgsz} px in ${formatNumber(report.seconds, 0)} s; Use forces a row.` }));
  details.addEventListener("toggle", () => { table.open = details.open; });
  return details;
}

// The empty box the settings form puts under the precision select; renderPrecision fills it.
export function buildPrecisionInfo() {
  table.signature = "-";  // a new box has no table yet
  return el("div", { id: "precision-info", class: "precision-info", "data-testid": "precision-info", hidden: true },
    el("p", { id: "precision-active", class: "precision-active", "data-testid": "precision-active", role: "status" }),
    el("div", { id: "engine-timing-slot" }));
}

export function renderPrecision(status) {
  const box = $("precision-info");
  if (!box || !status.settings) return;
  const sentence = precisionSentence(status);
  box.hidden = !status.model && sentence.kind === "fp32";
  const line = $("precision-active");
  line.dataset.state = sentence.kind;
  if (line.textContent !== sentence.text) line.textContent = sentence.text;
  // Rebuilt only when the report changes, so a table scrolled sideways stays put.
  const report = (status.precision && status.precision.timing) || null;
  const signature = JSON.stringify([report, status.precision, status.settings.engine]);
  if (signature === table.signature) return;
  table.signature = signature;
  $("engine-timing-slot").replaceChildren(...(report ? [timingDetails(report, status)] : []));
}
