// The Export card: start an export of the uploaded video, show its progress and time left, offer its files.
import { getJSON, postJSON } from "./api.js";

const POLL_RUNNING_MS = 1000;
const POLL_IDLE_MS = 5000; // a reset or an export started elsewhere shows up within this

const byId = (id) => document.getElementById(id);
const ui = {
  start: byId("export-btn"),
  cancel: byId("export-cancel"),
  progress: byId("export-progress"),
  text: byId("export-text"),
  error: byId("export-error"),
  files: byId("export-files"),
  video: byId("export-video"),
  videoLink: byId("export-video-link"),
  detectionsLink: byId("export-detections-link"),
};
let shownVideo = null; // the finished export whose video the preview holds
let timer = null;

function megabytes(bytes) {
  return `${(bytes / (1024 * 1024)).toFixed(1)} MB`;
}

function describe(exp) {
  if (exp.state === "running") {
    const left = exp.eta_s == null ? "" : `, about ${Math.ceil(exp.eta_s)} s left`;
    const fps = exp.fps == null ? "" : ` at ${exp.fps} fps`;
    return `Exporting: frame ${exp.frames_done} of ${exp.frames}${fps}${left}`;
  }
  if (exp.state === "done") {
    return `Done: ${exp.frames} frames at ${exp.fps} fps, ${exp.rows} boxes; ${exp.codec}, ${megabytes(exp.video.bytes)}`;
  }
  if (exp.state === "cancelled") return "Export cancelled: nothing was kept.";
  return "";
}

function render(exp) {
  const running = exp.state === "running";
  ui.start.disabled = running;
  ui.cancel.hidden = !running;
  ui.progress.hidden = !running;
  ui.progress.querySelector(".progress-fill").style.width = `${Math.round(exp.progress * 100)}%`;
  ui.progress.querySelector(".progress-text").textContent = `${Math.round(exp.progress * 100)}%`;
  ui.text.textContent = describe(exp);
  ui.error.hidden = !exp.error;
  ui.error.textContent = exp.error || "";
  const done = exp.state === "done" && exp.video && exp.detections;
  ui.files.hidden = !done;
  if (done) {
    const stamp = `${exp.video.bytes}-${exp.started_at}`; // a new export gets a fresh preview, not a cached one
    if (shownVideo !== stamp) {
      ui.video.src = `${exp.video.url}?v=${encodeURIComponent(stamp)}`;
      shownVideo = stamp;
    }
    ui.videoLink.href = exp.video.url;
    ui.videoLink.download = exp.video.name;
    ui.detectionsLink.href = exp.detections.url;
    ui.detectionsLink.download = exp.detections.name;
  } else if (shownVideo !== null) {
    ui.video.removeAttribute("src");
    ui.video.load();
    shownVideo = null;
  }
  schedule(running ? POLL_RUNNING_MS : POLL_IDLE_MS);
}

function showError(error) {
  ui.error.hidden = false;
  ui.error.textContent = error.message;
}

async function refresh() {
  try {
    render((await getJSON("/api/export")).export);
  } catch (error) {
    showError(error);
    schedule(POLL_IDLE_MS);
  }
}

function schedule(delay) {
  clearTimeout(timer);
  timer = setTimeout(refresh, delay);
}

async function act(url) {
  try {
    render((await postJSON(url)).export);
  } catch (error) {
    showError(error);
  }
}

ui.start.addEventListener("click", () => act("/api/export"));
ui.cancel.addEventListener("click", () => act("/api/export/cancel"));
refresh();
