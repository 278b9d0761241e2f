// The settings form: which controls, in which order, with the ranges and choices the server's status offers
// (status.options); rebuilt when those or the model change.

import { $, el } from "./dom.js";
import { buildControl, updateSettingValues } from "./setting-controls.js";

const ORDER = ["conf", "iou", "imgsz", "engine", "precision", "detect_every", "interpolate", "classes",
  "realtime", "loop", "threads", "jpeg_quality", "output_width"];
// Rarely touched: folded away so the everyday controls fit on one screen.
const ADVANCED = ["threads", "jpeg_quality", "output_width"];
// Stream widths the page offers, within the server's output_width range.
const OUTPUT_WIDTHS = [320, 480, 640, 800, 960, 1280, 1600, 1920];

const fraction = (v) => Number(v).toFixed(2);
const plain = (v) => String(v);

// Labels and help are the page's; every number a control may take comes from options.
const SPECS = {
  conf: { type: "range", label: "Confidence", step: 0.01, format: fraction,
    help: "Boxes scoring below this are hidden." },
  iou: { type: "range", label: "IoU (overlap)", step: 0.01, format: fraction,
    help: "Overlapping boxes above this are merged into one." },
  imgsz: { type: "select", label: "Input size", choices: (o) => o.imgsz,
    format: (v) => `${v} px`, help: "Smaller is faster; larger finds small objects." },
  engine: { type: "select", label: "Engine", choices: (o) => o.engine,
    format: (v) => ({ auto: "Auto (fastest measured here)", onnxruntime: "ONNX Runtime", ncnn: "NCNN" }[v] || v),
    help: "Auto times every engine on this device once per model and runs the fastest that agrees." },
  precision: { type: "select", label: "Precision", choices: (o) => o.precision,
    format: (v) => (v === "int8" ? "INT8 (quantized, faster)" : v === "fp32" ? "FP32 (exact)" : String(v).toUpperCase()),
    help: "With a chosen engine: INT8 is made during the device's one-off engine timing; FP16 is NCNN's." },
  detect_every: { type: "select", label: "Detect every", choices: detectEveryChoices,
    format: (v) => (v === "auto" ? "Auto (when things move)" : Number(v) === 1 ? "every frame" : `every ${v} frames`),
    help: "The network runs on these frames (keyframes); Auto runs it when something moves, not while the scene is still." },
  interpolate: { type: "select", label: "Between keyframes", choices: (o) => o.interpolate,
    format: (v) => ({ files: "Interpolate files, track live", always: "Interpolate (live: adds delay)",
      never: "Track (no delay)" }[v] || v),
    help: "Interpolating waits for the next keyframe and moves each box smoothly between the two." },
  realtime: { type: "check", label: "Real-time pacing",
    help: "Play at the video's own speed, skipping frames when detection is slower." },
  loop: { type: "check", label: "Loop the video", help: "Start again at the end instead of stopping." },
  classes: { type: "classes", label: "Classes to show" },
  threads: { type: "range", label: "CPU threads", step: 1, format: plain, help: "Threads for inference." },
  jpeg_quality: { type: "range", label: "JPEG quality", step: 1, format: plain,
    help: "Lower saves bandwidth on slow Wi-Fi." },
  output_width: { type: "select", label: "Stream width", choices: outputWidthChoices,
    format: (v) => (v === null ? "Original size" : `${v} px`), help: "Scale the stream down to save bandwidth." },
};

function detectEveryChoices(options) {
  const [low, high] = options.detect_every;
  const numbers = Array.from({ length: high - low + 1 }, (_, i) => low + i);
  return options.detect_every_auto ? [options.detect_every_auto, ...numbers] : numbers;
}

function outputWidthChoices(options) {
  const [low, high] = options.output_width;
  return [null, ...OUTPUT_WIDTHS.filter((w) => w >= low && w <= high)];
}

let formSignature = "";

// The next render rebuilds the form (a new model brings new classes and input sizes).
export function forgetSettingsForm() { formSignature = ""; }

function signature(status) {
  const model = status.model;
  return JSON.stringify([Object.keys(status.settings || {}), status.options || {}, model ? [model.name, model.classes] : null]);
}

function buildSettings(status) {
  const form = $("settings");
  const wasOpen = Boolean(form.querySelector("details[open]"));
  const nodes = [];
  const advanced = [];
  for (const key of ORDER) {
    if (!(key in (status.settings || {}))) continue;
    (ADVANCED.includes(key) ? advanced : nodes).push(buildControl(key, SPECS[key], status));
  }
  if (advanced.length) {
    nodes.push(el("details", { class: "advanced", open: wasOpen, "data-testid": "settings-advanced" },
      el("summary", { text: "Threads, JPEG quality, stream width" }),
      el("div", { class: "settings" }, ...advanced)));
  }
  form.replaceChildren(...nodes);
}

export function renderSettings(status, settingsFresh) {
  if (!status.settings) return;
  const current = signature(status);
  if (current !== formSignature) {
    formSignature = current;
    buildSettings(status);
    updateSettingValues(status.settings);
  } else if (settingsFresh) {
    updateSettingValues(status.settings);
  }
}

export function setupSettings() {
  // Settings apply on change; Enter in a field must not submit the form (no inline handler: CSP).
  $("settings").addEventListener("submit", (event) => event.preventDefault());
}
