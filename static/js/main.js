// The page's entry: polls GET /api/status once a second and redraws every part from it.

import { getJSON, postJSON } from "./api.js";
import { renderControls, renderStatusPill } from "./controls.js";
import { $, el, showText } from "./dom.js";
import { initEvents } from "./events.js";
import { renderJob } from "./job.js";
import { onRenderAll, page } from "./page.js";
import { renderPrecision } from "./precision.js";
import { settingsEpoch } from "./setting-controls.js";
import { renderSettings, setupSettings } from "./settings.js";
import { renderSource, setupSource } from "./source.js";
import { renderStats, setupStats } from "./stats.js";
import { renderStream, setupStream } from "./stream.js";
import { renderFiles, setupUploads } from "./uploads.js";

const POLL_MS = 1000;

function renderLan(urls) {
  const items = (urls || []).map((url) => el("li", {}, el("a", { href: url, text: url })));
  if (!items.length) items.push(el("li", { class: "hint", text: "No network address found: is this device on Wi-Fi or Ethernet?" }));
  $("lan-urls").replaceChildren(...items);
}

function renderAll(settingsFresh = true) {
  const status = page.status;
  renderStatusPill();
  renderControls();
  if (!status) return;
  $("demo-banner").hidden = !status.demo;
  renderFiles(status);
  renderStream(status);
  renderStats(status);
  renderSource(status);
  renderSettings(status, settingsFresh);
  // A poll that crossed a settings change pairs the new setting with an old engine timing state: wait for a fresh one.
  if (settingsFresh) renderPrecision(status);
  renderJob(status.job);
  renderLan(status.lan_urls);
}

async function poll() {
  const actionEpoch = page.actionEpoch;
  const sentAt = settingsEpoch();
  try {
    const status = await getJSON("/api/status");
    page.offline = false;
    if (actionEpoch !== page.actionEpoch && page.status) {
      // An upload/start/stop finished while this poll was in flight: keep what that action told us.
      status.streaming = page.status.streaming;
      status.video = page.status.video;
      status.model = page.status.model;
    }
    const settingsFresh = sentAt === settingsEpoch();
    if (!settingsFresh && page.status) status.settings = page.status.settings;
    page.status = status;
    renderAll(settingsFresh);
  } catch (error) {
    // Signed out (cookie expired, password changed): the server shows its sign-in page on reload.
    if (error.status === 401) window.location.reload();
    page.offline = true;
    renderStatusPill();
    renderControls();
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

function setupReset() {
  const dialog = $("reset-dialog");
  $("reset-btn").addEventListener("click", () => {
    showText($("reset-error"), "");
    dialog.returnValue = "";
    dialog.showModal();
  });
  dialog.addEventListener("close", async () => {
    if (dialog.returnValue !== "confirm") return;
    try {
      await postJSON("/reset");
      window.location.reload();
    } catch (error) {
      showText($("reset-error"), error.message);
    }
  });
}

onRenderAll(renderAll);
setupUploads();
setupStream();
setupStats();
setupSource();
setupSettings();
setupReset();
const eventsSection = document.getElementById("events");
if (eventsSection) initEvents(eventsSection);
poll();
