// Progress of the server's long work: a conversion (under the model zone when this tab uploaded it), the engine
// timing or an export.

import { $ } from "./dom.js";
import { page } from "./page.js";
import { setProgress } from "./uploads.js";

const TITLES = { "engine-timing": "Timing the engines on this device (INT8 made on the way)", convert: "Converting a model to ONNX", export: "Exporting the video" };

// "about 40 s left" from the server's estimate (eta_s is null until enough of the job is done to tell).
function timeLeft(job) {
  if (typeof job.eta_s !== "number" || !Number.isFinite(job.eta_s)) return "";
  const seconds = Math.round(job.eta_s);
  const text = seconds >= 90 ? `${Math.round(seconds / 60)} min` : `${seconds} s`;
  return ` (about ${text} left)`;
}

function renderOwnConversion(job) {
  const fraction = Number(job.progress);
  const label = job.message || job.stage || "Converting to ONNX…";
  setProgress("model", Number.isFinite(fraction) && fraction > 0 ? fraction : null,
    `Converting to ONNX… ${Number.isFinite(fraction) ? Math.round(fraction * 100) + "%" : ""}`.trim());
  $("model-progress").title = label;
}

export function renderJob(job) {
  const box = $("job");
  const converting = job && job.kind === "convert";
  if (converting && page.uploading.model === "processing") renderOwnConversion(job);
  // This page's own conversion shows under the model zone; anything else (the engine timing, another device's upload) here.
  if (!job || (converting && page.uploading.model)) { box.hidden = true; return; }
  const fraction = Number(job.progress);
  box.hidden = false;
  box.querySelector(".progress-fill").style.width = `${Math.round((Number.isFinite(fraction) ? fraction : 0) * 100)}%`;
  const title = TITLES[job.kind] || job.kind;
  box.querySelector(".job-text").textContent = `${title}: ${job.message || job.stage || "working"}…${timeLeft(job)}`;
}
