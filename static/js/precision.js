// Under the precision setting: what actually runs (fp32 or int8, which may differ from the setting while int8
// is tuned) and the table of what the int8 tuning tried.

import { $, el, formatNumber } from "./dom.js";

const table = {
  signature: "",
  open: true,  // the tuning table starts open; a person who folds it away keeps it folded
};

function formatSpeedup(speedup) {
  return Number.isFinite(speedup) ? `${speedup.toFixed(1)}×` : "–";
}

function int8Failure(status) {
  return status.error && /int8/i.test(status.error) ? status.error : "";
}

function waitingReason(status) {
  const precision = status.precision || {};
  if (precision.building) return "INT8 is being tuned on this device…";
  if (int8Failure(status)) return int8Failure(status);
  if (status.video && status.model) return "INT8 will be tuned when the stream starts";
  return "INT8 will be tuned once a video and a model are uploaded";
}

// One sentence on what actually runs.
function precisionSentence(status) {
  const precision = status.precision || {};
  const report = precision.int8;
  const chosen = report && (report.rows || []).find((row) => row.chosen);
  const speed = chosen && Number.isFinite(chosen.speedup)
    ? `${formatSpeedup(chosen.speedup)} ${chosen.speedup >= 1 ? "faster than" : "the speed of"} FP32` : "";
  const agreement = chosen && Number.isFinite(chosen.agreement) ? `agreement ${chosen.agreement.toFixed(2)}` : "";
  if (precision.active === "int8" && report) {
    const facts = [`recipe ${report.chosen}`, speed, agreement].filter(Boolean).join(", ");
    const warning = report.qualified ? ""
      : ` — below the ${Number(report.min_agreement).toFixed(2)} agreement bar, so boxes may differ from FP32`;
    return { kind: "int8", text: `Running INT8 (${facts})${warning}` };
  }
  if (status.settings.precision !== "int8") {
    const ready = report ? `. A tuned INT8 model is ready (${[speed, agreement].filter(Boolean).join(", ")})` : "";
    return { kind: "fp32", text: `Running FP32${ready}` };
  }
  return { kind: precision.building ? "tuning" : "waiting", text: `Running FP32 — ${waitingReason(status)}` };
}

// Four narrow columns fit a phone: the chosen mark rides in the name, errors are told below the table.
function tuningRow(row, report) {
  const failed = Boolean(row.error);
  const below = !failed && Number.isFinite(row.agreement) && row.agreement < report.min_agreement;
  const name = el("th", { scope: "row" },
    row.chosen ? el("span", { class: "mark", "aria-hidden": "true", text: "✓ " }) : null,
    row.recipe,
    row.chosen ? el("span", { class: "visually-hidden", text: " (chosen)" }) : null);
  return el("tr", { class: row.chosen ? "chosen" : failed ? "failed" : null, "data-recipe": row.recipe },
    name,
    el("td", { text: failed ? "failed" : formatNumber(row.ms, 1) }),
    el("td", { text: formatSpeedup(row.speedup) }),
    el("td", { class: below ? "below" : null, title: below ? "too different from FP32" : null,
      text: formatNumber(row.agreement, 2) }));
}

function tuningTable(report) {
  const reference = el("tr", { class: "reference" },
    el("th", { scope: "row", text: "fp32" }),
    el("td", { text: formatNumber(report.fp32_ms, 1) }),
    el("td", { text: "1.0×" }),
    el("td", { text: "1.00" }));
  return el("table", { id: "int8-table", class: "tuning-table", "data-testid": "int8-table" },
    el("thead", {}, el("tr", {},
      ...["Recipe", "ms", "Speed-up", "Agree\u00ADment"].map((name) => el("th", { scope: "col", text: name })))),
    el("tbody", {}, reference, ...(report.rows || []).map((row) => tuningRow(row, report))));
}

function tuningDetails(report) {
  const failures = (report.rows || []).filter((row) => row.error);
  const details = el("details", { class: "tuning", "data-testid": "int8-tuning", open: table.open },
    el("summary", { text: "What the INT8 tuning tried" }),
    el("div", { class: "table-scroll", role: "region", "aria-label": "INT8 tuning results", tabindex: "0" },
      tuningTable(report)),
    failures.length ? el("ul", { class: "tuning-errors", "data-testid": "int8-errors" },
      ...failures.map((row) => el("li", {}, el("b", { text: row.recipe }), ` could not be used: ${row.error}`))) : null,
    el("p", { id: "int8-note", class: "tuning-note", "data-testid": "int8-note", text: report.note }),
    el("p", { class: "tuning-facts",
      text: `✓ marks the recipe in use. Agreement is how closely its boxes match FP32's; `
        + `${Number(report.min_agreement).toFixed(2)} is needed to qualify (lower ones in orange). `
        + `Tuned at ${report.imgsz} px in ${formatNumber(report.seconds, 0)} s.` }));
  details.addEventListener("toggle", () => { table.open = details.open; });
  return details;
}

// The empty box the settings form puts under the precision select; renderPrecision fills it.
export function buildPrecisionInfo() {
  table.signature = "-";  // a new box has no table yet
  return el("div", { id: "precision-info", class: "precision-info", "data-testid": "precision-info", hidden: true },
    el("p", { id: "precision-active", class: "precision-active", "data-testid": "precision-active", role: "status" }),
    el("div", { id: "int8-tuning-slot" }));
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
  const report = (status.precision && status.precision.int8) || null;
  const signature = JSON.stringify(report);
  if (signature === table.signature) return;
  table.signature = signature;
  $("int8-tuning-slot").replaceChildren(...(report ? [tuningDetails(report)] : []));
}
