// The MJPEG picture: Start and Stop, attaching and detaching the feed, and the text shown while idle.

import { postJSON } from "./api.js";
import { renderControls } from "./controls.js";
import { $, showText } from "./dom.js";
import { actionDone, page, renderAll } from "./page.js";

const EMPTY_TEXT = "Upload a video and a YOLOv8 model, then press Start";
const RETRY_MS = 1500;

const feed = {
  attached: false,
  retry: null,
  endedByItself: false,  // the stream stopped without this tab pressing Stop
};

function feedUrl() {
  return `/video_feed?t=${Date.now()}`;
}

function attach() {
  if (feed.attached) return;
  feed.attached = true;
  // An endless MJPEG image before window "load" would keep the page loading forever.
  const go = () => {
    if (!feed.attached) return;
    const img = $("stream");
    img.src = feedUrl();
    img.hidden = false;
    $("stream-placeholder").hidden = true;
  };
  if (document.readyState === "complete") go();
  else window.addEventListener("load", go, { once: true });
}

function detach() {
  clearTimeout(feed.retry);
  feed.attached = false;
  const img = $("stream");
  img.removeAttribute("src");  // closes the multipart connection so the server sees one viewer less
  img.hidden = true;
  $("stream-placeholder").hidden = false;
}

function onFeedError() {
  // The feed dropped while the server still streams (e.g. a network blip): reconnect once the dust settles.
  if (!feed.attached || !$("stream").getAttribute("src")) return;
  clearTimeout(feed.retry);
  feed.retry = setTimeout(() => {
    if (feed.attached && page.status && page.status.streaming) $("stream").src = feedUrl();
  }, RETRY_MS);
}

// POST start or stop; on success the status says so at once, without waiting for the next poll.
async function command(path, streaming) {
  page.busy = true;
  if (streaming) showText($("stream-error"), "");
  renderControls();
  try {
    await postJSON(path);
    actionDone();
    if (page.status) {
      page.status.streaming = streaming;
      if (streaming) page.status.error = null;
    }
    if (streaming) attach();
    else detach();
  } catch (error) {
    showText($("stream-error"), error.message);
  } finally {
    page.busy = false;
    renderAll();
  }
}

function placeholderText(status) {
  const source = status && (status.video || status.source);
  if (source && status.model) {
    return feed.endedByItself ? "The stream has ended. Press Start to play it again" : "Ready: press Start to watch the detections";
  }
  if (status && status.video) return "Now upload a YOLOv8 model (.pt or .onnx), then press Start";
  if (status && status.model) return "Now upload a video or choose a stream, then press Start";
  return EMPTY_TEXT;
}

export function renderStream(status) {
  const frame = $("stream-frame");
  const video = status && (status.video || status.source);  // a live source's geometry once known
  const known = Boolean(video && video.width > 0 && video.height > 0);
  frame.style.aspectRatio = known ? `${video.width} / ${video.height}` : "";
  if (known) frame.style.setProperty("--ar", String(video.width / video.height));
  else frame.style.removeProperty("--ar");

  if (status && status.streaming) {
    feed.endedByItself = false;
    attach();
  } else if (feed.attached) {
    // Nobody here pressed Stop: the video reached its end (loop off), failed, or another viewer stopped it.
    feed.endedByItself = true;
    detach();
  }
  $("placeholder-text").textContent = placeholderText(status);

  const streamError = status && !status.streaming && status.error;
  if (streamError) showText($("stream-error"), streamError);
  else if (status && status.streaming) showText($("stream-error"), "");
}

export function setupStream() {
  $("start-btn").addEventListener("click", () => command("/stream/start", true));
  $("stop-btn").addEventListener("click", () => command("/stream/stop", false));
  $("stream").addEventListener("error", onFeedError);
}
