// The video and model drop zones: uploads with progress, and what the server says about the stored files.

import { upload } from "./api.js";
import { renderControls } from "./controls.js";
import { $, el, formatDuration, formatSize, showText } from "./dom.js";
import { actionDone, page, renderAll } from "./page.js";
import { forgetSettingsForm } from "./settings.js";

export function setProgress(kind, fraction, text) {
  const box = $(`${kind}-progress`);
  box.hidden = false;
  box.classList.toggle("indeterminate", fraction === null);
  box.querySelector(".progress-fill").style.width = fraction === null ? "" : `${Math.round(fraction * 100)}%`;
  box.querySelector(".progress-text").textContent = text;
}

async function uploadFile(kind, file) {
  if (!file || page.uploading[kind]) return;
  const isPt = kind === "model" && file.name.toLowerCase().endsWith(".pt");
  showText($(`${kind}-error`), "");
  page.uploading[kind] = "sending";
  setProgress(kind, 0, "0%");
  renderControls();

  const onProgress = (fraction) => {
    if (page.uploading[kind] !== "sending") return;
    if (fraction < 1) {
      setProgress(kind, fraction, `Uploading ${Math.round(fraction * 100)}%`);
      return;
    }
    page.uploading[kind] = "processing";
    setProgress(kind, null, isPt ? "Converting to ONNX…" : "Checking…");
  };
  try {
    const data = await upload(`/upload/${kind}`, file, onProgress);
    if (page.status) page.status[kind] = data[kind];
    forgetSettingsForm();  // a new model brings new classes and input sizes
  } catch (error) {
    showText($(`${kind}-error`), error.message);
  } finally {
    page.uploading[kind] = false;
    actionDone();
    $(`${kind}-progress`).hidden = true;
    $(`${kind}-input`).value = "";
    renderAll();
  }
}

function setupDropZone(kind) {
  const zone = $(`${kind}-zone`);
  const input = $(`${kind}-input`);
  input.addEventListener("change", () => uploadFile(kind, input.files[0]));
  zone.addEventListener("dragenter", (event) => { event.preventDefault(); zone.classList.add("dragover"); });
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("dragover"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("dragover"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dragover");
    if (input.disabled) return;
    const file = event.dataTransfer && event.dataTransfer.files[0];
    if (file) uploadFile(kind, file);
  });
}

function videoFacts(video) {
  const seconds = video.fps > 0 ? video.frames / video.fps : NaN;
  return [
    el("div", { class: "name", text: video.name }),
    el("div", { class: "facts" },
      el("span", { "data-testid": "video-resolution" }, el("b", { text: `${video.width}×${video.height}` })),
      el("span", { text: `${+Number(video.fps).toFixed(2)} fps` }),
      el("span", { text: `${formatDuration(seconds)} (${video.frames} frames)` }),
      el("span", { text: formatSize(video.size) })),
  ];
}

function modelFacts(model) {
  const classes = model.classes || [];
  const family = model.family === "yolov8" ? "YOLOv8" : (model.family || "unknown");
  const shown = classes.slice(0, 5).join(", ");
  const more = classes.length > 5 ? ` … +${classes.length - 5} more` : "";
  return [
    el("div", { class: "name", text: model.name }),
    el("div", { class: "facts" },
      el("span", { text: `${family} · ${model.task || "detect"}` }),
      el("span", { "data-testid": "model-classes-count" },
        el("b", { text: `${classes.length} ${classes.length === 1 ? "class" : "classes"}` })),
      el("span", { text: `input ${model.imgsz} px${model.dynamic ? " (any size)" : ""}` })),
    classes.length ? el("div", { class: "classes", text: shown + more }) : null,
  ];
}

function renderInfo(kind, file, facts) {
  const box = $(`${kind}-info`);
  box.hidden = !file;
  $(`${kind}-zone`).classList.toggle("has-file", Boolean(file));
  box.replaceChildren(...(file ? facts(file).filter(Boolean) : []));
}

// What the server stores; a zone busy with an upload keeps its progress bar instead.
export function renderFiles(status) {
  if (!page.uploading.video) renderInfo("video", status.video, videoFacts);
  if (!page.uploading.model) renderInfo("model", status.model, modelFacts);
}

export function setupUploads() {
  setupDropZone("video");
  setupDropZone("model");
  // A file dropped next to a zone would otherwise make the browser navigate away to it.
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => event.preventDefault());
}
