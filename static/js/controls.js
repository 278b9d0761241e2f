// Which buttons and inputs are usable now, and the status pill in the top bar.

import { $ } from "./dom.js";
import { page } from "./page.js";

export const RESET_REASON = "Stop the stream first: reset deletes the uploaded files";

function hasSource(status) {
  return Boolean(status && (status.video || status.source));
}

export function renderControls() {
  const status = page.status;
  const streaming = Boolean(status && status.streaming);
  const uploading = Boolean(page.uploading.video || page.uploading.model);
  const haveBoth = hasSource(status) && Boolean(status.model);

  $("start-btn").disabled = !status || streaming || !haveBoth || uploading || page.busy || page.offline;
  $("stop-btn").disabled = !streaming || page.busy || page.offline;
  $("trace-btn").disabled = !streaming || page.tracing || page.offline;

  let hint = "";
  if (status && !streaming && !haveBoth) {
    const missing = [!hasSource(status) && "a video or a stream", !status.model && "a model"].filter(Boolean).join(" and ");
    hint = `Start needs ${missing}.`;
  }
  $("start-hint").textContent = hint;

  for (const kind of ["video", "model"]) {
    const locked = streaming || Boolean(page.uploading[kind]);
    $(`${kind}-input`).disabled = locked;
    $(`${kind}-zone`).classList.toggle("disabled", locked);
    $(`${kind}-zone`).setAttribute("aria-disabled", String(locked));
  }
  $("files-locked").hidden = !streaming;

  const reset = $("reset-btn");
  const nothingStored = !status || (!status.video && !status.model && !status.source);
  reset.disabled = streaming || uploading || nothingStored;
  const why = streaming ? RESET_REASON : "";
  reset.title = why || (nothingStored ? "Nothing uploaded yet" : "Delete the uploaded video and model");
  $("reset-wrap").title = why;
  $("reset-hint").hidden = !streaming;
}

export function renderStatusPill() {
  const status = page.status;
  const pill = $("status-pill");
  let state = "stopped";
  let text = "Stopped";
  if (page.offline) { state = "offline"; text = "Server unreachable"; }
  else if (!status) { state = "connecting"; text = "Connecting…"; }
  else if (status.job) { state = "busy"; text = ({ "engine-timing": "Timing engines…", export: "Exporting…" })[status.job.kind] || "Converting…"; }
  else if (status.streaming) { state = "streaming"; text = "Streaming"; }
  else if (hasSource(status) && status.model) { text = "Ready"; }
  pill.dataset.state = state;
  pill.textContent = text;
}
