// The page: uploads, start/stop, live stats and settings, all driven by GET /api/status.
"use strict";

(() => {
  const POLL_MS = 1000;
  const SLIDER_DEBOUNCE_MS = 250;
  const STAGES = ["decode", "preprocess", "inference", "postprocess", "track", "draw", "encode"];
  const OUTPUT_WIDTHS = [320, 480, 640, 800, 960, 1280, 1600, 1920];
  const RESET_REASON = "Stop the stream first: reset deletes the uploaded files";
  const EMPTY_TEXT = "Upload a video and a YOLOv8 model, then press Start";

  const $ = (id) => document.getElementById(id);

  const state = {
    status: null,
    offline: false,
    // "sending" while bytes go up, "processing" while the server checks/converts, else false.
    uploading: { video: false, model: false },
    streamAttached: false,
    streamRetry: null,
    busy: false,
    tracing: false,
    endedByItself: false,
    // Polls that started before a user action carry stale values; the epochs let us drop those parts.
    actionEpoch: 0,
    settingsEpoch: 0,
    pendingSettings: new Set(),
    sliderTimers: {},
    settingsSignature: "",
    precisionSignature: "",
    // The tuning table starts open; a person who folds it away keeps it folded.
    tuningOpen: true,
  };

  // ---------- small helpers ----------

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else if (value === true) node.setAttribute(key, "");
      else node.setAttribute(key, value);
    }
    for (const child of children) {
      if (child !== null && child !== undefined) node.append(child);
    }
    return node;
  }

  function showText(node, text) {
    node.textContent = text || "";
    node.hidden = !text;
  }

  function formatDuration(seconds) {
    if (!Number.isFinite(seconds) || seconds < 0) return "unknown length";
    const total = Math.round(seconds);
    const minutes = Math.floor(total / 60);
    return `${minutes}:${String(total % 60).padStart(2, "0")}`;
  }

  function formatSize(bytes) {
    if (!Number.isFinite(bytes)) return "";
    const mb = bytes / (1024 * 1024);
    return `${mb < 10 ? mb.toFixed(2) : mb.toFixed(1)} MB`;
  }

  function formatNumber(value, digits = 0) {
    return Number.isFinite(value) ? value.toFixed(digits) : "–";
  }

  async function readError(response) {
    try {
      const data = await response.json();
      if (data && data.error) return data.error;
    } catch (_) { /* not JSON: fall through to a generic message */ }
    return friendlyHttpError(response.status);
  }

  function friendlyHttpError(code) {
    if (code === 413) return "The file is too large for this server.";
    if (code === 409) return "Not possible right now: stop the stream first.";
    if (code >= 500) return `The server failed (HTTP ${code}). Check its log.`;
    return `Request failed (HTTP ${code}).`;
  }

  async function postJson(url, body) {
    const response = await fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body === undefined ? {} : body),
    });
    if (!response.ok) throw new Error(await readError(response));
    return response.json();
  }

  // ---------- uploads ----------

  function setProgress(kind, fraction, text) {
    const box = $(`${kind}-progress`);
    box.hidden = false;
    box.classList.toggle("indeterminate", fraction === null);
    box.querySelector(".progress-fill").style.width = fraction === null ? "" : `${Math.round(fraction * 100)}%`;
    box.querySelector(".progress-text").textContent = text;
  }

  function hideProgress(kind) {
    $(`${kind}-progress`).hidden = true;
  }

  function uploadFile(kind, file) {
    if (!file || state.uploading[kind]) return;
    const isPt = kind === "model" && file.name.toLowerCase().endsWith(".pt");
    showText($(`${kind}-error`), "");
    state.uploading[kind] = "sending";
    setProgress(kind, 0, "0%");
    renderControls();

    const form = new FormData();
    form.append("file", file, file.name);
    const xhr = new XMLHttpRequest();
    xhr.open("POST", `/upload/${kind}`);
    xhr.upload.onprogress = (event) => {
      if (event.lengthComputable && state.uploading[kind] === "sending") {
        const fraction = event.loaded / event.total;
        setProgress(kind, fraction, `Uploading ${Math.round(fraction * 100)}%`);
      }
    };
    xhr.upload.onload = () => {
      state.uploading[kind] = "processing";
      setProgress(kind, null, isPt ? "Converting to ONNX…" : "Checking…");
    };
    xhr.onload = () => finishUpload(kind, xhr);
    const failed = () => finishUpload(kind, null);
    xhr.onerror = failed;
    xhr.onabort = failed;
    xhr.ontimeout = failed;
    xhr.send(form);
  }

  function finishUpload(kind, xhr) {
    state.uploading[kind] = false;
    state.actionEpoch += 1;
    hideProgress(kind);
    $(`${kind}-input`).value = "";
    if (!xhr) {
      showText($(`${kind}-error`),
        "The upload was interrupted: the file may be larger than the server accepts, or the connection dropped.");
    } else {
      let data = null;
      try { data = JSON.parse(xhr.responseText); } catch (_) { data = null; }
      if (xhr.status >= 200 && xhr.status < 300 && data && data[kind]) {
        if (state.status) state.status[kind] = data[kind];
        state.settingsSignature = ""; // a new model brings new classes and input sizes
      } else {
        showText($(`${kind}-error`), (data && data.error) || friendlyHttpError(xhr.status));
      }
    }
    renderAll();
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

  function renderVideoInfo(video) {
    const box = $("video-info");
    box.replaceChildren();
    box.hidden = !video;
    $("video-zone").classList.toggle("has-file", Boolean(video));
    if (!video) return;
    const seconds = video.fps > 0 ? video.frames / video.fps : NaN;
    box.append(
      el("div", { class: "name", text: video.name }),
      el("div", { class: "facts" },
        el("span", { "data-testid": "video-resolution" }, el("b", { text: `${video.width}×${video.height}` })),
        el("span", { text: `${+Number(video.fps).toFixed(2)} fps` }),
        el("span", { text: `${formatDuration(seconds)} (${video.frames} frames)` }),
        el("span", { text: formatSize(video.size) })),
    );
  }

  function renderModelInfo(model) {
    const box = $("model-info");
    box.replaceChildren();
    box.hidden = !model;
    $("model-zone").classList.toggle("has-file", Boolean(model));
    if (!model) return;
    const classes = model.classes || [];
    const family = model.family === "yolov8" ? "YOLOv8" : (model.family || "unknown");
    const shown = classes.slice(0, 5).join(", ");
    const more = classes.length > 5 ? ` … +${classes.length - 5} more` : "";
    box.append(
      el("div", { class: "name", text: model.name }),
      el("div", { class: "facts" },
        el("span", { text: `${family} · ${model.task || "detect"}` }),
        el("span", { "data-testid": "model-classes-count" },
          el("b", { text: `${classes.length} ${classes.length === 1 ? "class" : "classes"}` })),
        el("span", { text: `input ${model.imgsz} px${model.dynamic ? " (any size)" : ""}` })),
      classes.length ? el("div", { class: "classes", text: shown + more }) : null,
    );
  }

  // ---------- stream ----------

  function attachStream() {
    if (state.streamAttached) return;
    state.streamAttached = true;
    // An endless MJPEG image before window "load" would keep the page loading forever.
    const go = () => {
      if (!state.streamAttached) return;
      const img = $("stream");
      img.src = `/video_feed?t=${Date.now()}`;
      img.hidden = false;
      $("stream-placeholder").hidden = true;
    };
    if (document.readyState === "complete") go();
    else window.addEventListener("load", go, { once: true });
  }

  function detachStream() {
    clearTimeout(state.streamRetry);
    state.streamAttached = false;
    const img = $("stream");
    img.removeAttribute("src"); // closes the multipart connection so the server sees one viewer less
    img.hidden = true;
    $("stream-placeholder").hidden = false;
  }

  function onStreamError() {
    // The feed dropped while the server still streams (e.g. a network blip): reconnect once the dust settles.
    if (!state.streamAttached || !$("stream").getAttribute("src")) return;
    clearTimeout(state.streamRetry);
    state.streamRetry = setTimeout(() => {
      if (state.streamAttached && state.status && state.status.streaming) {
        $("stream").src = `/video_feed?t=${Date.now()}`;
      }
    }, 1500);
  }

  async function startStream() {
    state.busy = true;
    showText($("stream-error"), "");
    renderControls();
    try {
      await postJson("/stream/start");
      state.actionEpoch += 1;
      if (state.status) { state.status.streaming = true; state.status.error = null; }
      attachStream();
    } catch (error) {
      showText($("stream-error"), error.message);
    } finally {
      state.busy = false;
      renderAll();
    }
  }

  async function stopStream() {
    state.busy = true;
    renderControls();
    try {
      await postJson("/stream/stop");
      state.actionEpoch += 1;
      if (state.status) state.status.streaming = false;
      detachStream();
    } catch (error) {
      showText($("stream-error"), error.message);
    } finally {
      state.busy = false;
      renderAll();
    }
  }

  function renderStream(status) {
    const frame = $("stream-frame");
    const video = status && (status.video || status.source);  // a live source's geometry once known
    const known = Boolean(video && video.width > 0 && video.height > 0);
    frame.style.aspectRatio = known ? `${video.width} / ${video.height}` : "";
    if (known) frame.style.setProperty("--ar", String(video.width / video.height));
    else frame.style.removeProperty("--ar");

    if (status && status.streaming) {
      state.endedByItself = false;
      attachStream();
    } else if (state.streamAttached) {
      // Nobody here pressed Stop: the video reached its end (loop off), failed, or another viewer stopped it.
      state.endedByItself = true;
      detachStream();
    }

    let text = EMPTY_TEXT;
    if (status && (status.video || status.source) && status.model) {
      text = state.endedByItself ? "The stream has ended. Press Start to play it again" : "Ready: press Start to watch the detections";
    }
    else if (status && status.video) text = "Now upload a YOLOv8 model (.pt or .onnx), then press Start";
    else if (status && status.model) text = "Now upload a video or choose a stream, then press Start";
    $("placeholder-text").textContent = text;

    const streamError = status && !status.streaming && status.error;
    if (streamError) showText($("stream-error"), streamError);
    else if (status && status.streaming) showText($("stream-error"), "");
  }

  // ---------- stats ----------

  // Stop and reset clear the server's numbers: idle shows dashes. A stream that ended by itself keeps its
  // counts (how far it got), but nothing runs any more, so no rate and no viewers.
  function shownStats(status) {
    const stats = status.stats;
    if (status.streaming) return stats;
    if (stats && stats.frames > 0) return { ...stats, fps: null, viewers: null };
    return null;
  }

  function renderStats(stats) {
    stats = stats || {};
    $("stat-fps").textContent = formatNumber(stats.fps, 1);
    $("stat-frames").textContent = formatNumber(stats.frames);
    $("stat-detections").textContent = formatNumber(stats.detections);
    $("stat-viewers").textContent = formatNumber(stats.viewers);
    $("stat-latency").textContent = formatNumber(stats.frame_latency_ms, 1);
    $("stat-dropped").textContent = formatNumber(stats.dropped);

    const latency = stats.latency_ms || {};
    const parts = STAGES.map((stage) => [stage, Number(latency[stage]) || 0]);
    const sum = parts.reduce((acc, [, ms]) => acc + ms, 0);
    const total = Number(latency.total) || sum;
    $("latency-total").textContent = total > 0 ? total.toFixed(1) : "–";

    const bar = $("latency-bar");
    if (bar.children.length !== STAGES.length) {
      bar.replaceChildren(...STAGES.map((stage) => el("span", { class: `s-${stage}`, "data-stage": stage })));
      $("latency-legend").replaceChildren(...STAGES.map((stage) =>
        el("li", {}, el("i", { class: `s-${stage}` }), stage, " ", el("b", { "data-stage": stage, text: "–" }))));
    }
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

  // ---------- trace ----------

  const TRACE_FRAMES = 60;

  async function recordTrace() {
    state.tracing = true;
    renderControls();
    $("trace-hint").textContent = `Recording ${TRACE_FRAMES} frames…`;
    try {
      const response = await fetch(`/api/trace?frames=${TRACE_FRAMES}`, { cache: "no-store" });
      if (!response.ok) throw new Error(await readError(response));
      const blob = await response.blob();
      const link = el("a", { href: URL.createObjectURL(blob), download: "edge-detect-trace.json" });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
      $("trace-hint").textContent = "Saved edge-detect-trace.json: open it in ui.perfetto.dev or chrome://tracing";
    } catch (error) {
      $("trace-hint").textContent = `Trace failed: ${error.message}`;
    } finally {
      state.tracing = false;
      renderControls();
    }
  }

  // ---------- settings ----------

  const SETTING_ORDER = ["conf", "iou", "imgsz", "precision", "detect_every", "classes",
    "realtime", "loop", "threads", "jpeg_quality", "output_width"];
  // Rarely touched: folded away so the everyday controls fit on one screen.
  const ADVANCED = ["threads", "jpeg_quality", "output_width"];

  const SETTING_SPECS = {
    conf: { type: "range", label: "Confidence", min: 0.05, max: 0.95, step: 0.01,
      format: (v) => Number(v).toFixed(2), help: "Boxes scoring below this are hidden." },
    iou: { type: "range", label: "IoU (overlap)", min: 0.05, max: 0.95, step: 0.01,
      format: (v) => Number(v).toFixed(2), help: "Overlapping boxes above this are merged into one." },
    imgsz: { type: "select", label: "Input size", choices: (o) => o.imgsz || [640],
      format: (v) => `${v} px`, help: "Smaller is faster; larger finds small objects." },
    precision: { type: "select", label: "Precision", choices: (o) => o.precision || ["fp32"],
      format: (v) => (v === "int8" ? "INT8 (quantized, faster)" : v === "fp32" ? "FP32 (exact)" : String(v).toUpperCase()),
      help: "INT8 needs a one-off quantization step." },
    detect_every: { type: "range", label: "Detect every", range: (o) => o.detect_every || [1, 10], step: 1,
      format: (v) => (Number(v) === 1 ? "every frame" : `every ${v} frames`),
      help: "Boxes are carried forward between detections." },
    realtime: { type: "check", label: "Real-time pacing",
      help: "Play at the video's own speed, skipping frames when detection is slower." },
    loop: { type: "check", label: "Loop the video", help: "Start again at the end instead of stopping." },
    classes: { type: "classes", label: "Classes to show" },
    threads: { type: "range", label: "CPU threads", range: (o) => o.threads || [1, 4], step: 1,
      format: (v) => String(v), help: "Threads for inference." },
    jpeg_quality: { type: "range", label: "JPEG quality", range: (o) => o.jpeg_quality || [30, 95], step: 1,
      format: (v) => String(v), help: "Lower saves bandwidth on slow Wi-Fi." },
    output_width: { type: "select", label: "Stream width", choices: outputWidthChoices,
      format: (v) => (v === null ? "Original size" : `${v} px`), help: "Scale the stream down to save bandwidth." },
  };

  function outputWidthChoices(options) {
    const [low, high] = options.output_width || [160, 1920];
    return [null, ...OUTPUT_WIDTHS.filter((w) => w >= low && w <= high)];
  }

  function controlId(key) { return `setting-${key}`; }

  function settingsSignature(status) {
    const model = status.model;
    return JSON.stringify([Object.keys(status.settings || {}), status.options || {}, model ? [model.name, model.classes] : null]);
  }

  function buildSettings(status) {
    const form = $("settings");
    const options = status.options || {};
    const wasOpen = Boolean(form.querySelector("details[open]"));
    const nodes = [];
    const advanced = [];
    for (const key of SETTING_ORDER) {
      if (!(key in (status.settings || {}))) continue;
      const spec = SETTING_SPECS[key];
      const builder = { range: buildRange, select: buildSelect, check: buildCheck, classes: buildClasses }[spec.type];
      (ADVANCED.includes(key) ? advanced : nodes).push(builder(key, spec, options, status));
    }
    if (advanced.length) {
      nodes.push(el("details", { class: "advanced", open: wasOpen, "data-testid": "settings-advanced" },
        el("summary", { text: "Threads, JPEG quality, stream width" }),
        el("div", { class: "settings" }, ...advanced)));
    }
    form.replaceChildren(...nodes);
    state.precisionSignature = "-"; // the rebuilt form has an empty precision box
  }

  function settingError(key) {
    return el("p", { id: `error-${key}`, class: "error-text", "data-testid": `error-${key}`, role: "alert", hidden: true });
  }

  function buildRange(key, spec, options) {
    const [min, max] = spec.range ? spec.range(options) : [spec.min, spec.max];
    const input = el("input", {
      id: controlId(key), type: "range", min, max, step: spec.step, "data-testid": controlId(key),
      "aria-describedby": `help-${key}`,
      oninput: () => {
        $(`value-${key}`).textContent = spec.format(input.value);
        queueSlider(key, () => Number(input.value));
      },
      onchange: () => flushSlider(key, () => Number(input.value)),
    });
    return el("div", { class: "setting", "data-key": key },
      el("div", { class: "setting-head" },
        el("label", { for: controlId(key), text: spec.label }),
        el("span", { id: `value-${key}`, class: "setting-value", "data-testid": `value-${key}` })),
      input,
      el("span", { id: `help-${key}`, class: "help", text: spec.help }),
      settingError(key));
  }

  function buildSelect(key, spec, options, status) {
    const choices = [...spec.choices(options)];
    const current = status.settings[key];
    if (!choices.some((c) => c === current)) choices.push(current);
    const select = el("select", {
      id: controlId(key), "data-testid": controlId(key), "aria-describedby": `help-${key}`,
      onchange: () => sendSetting(key, JSON.parse(select.value)),
    }, ...choices.map((choice) => el("option", { value: JSON.stringify(choice), text: spec.format(choice) })));
    return el("div", { class: "setting", "data-key": key },
      el("div", { class: "setting-head" }, el("label", { for: controlId(key), text: spec.label })),
      select,
      el("span", { id: `help-${key}`, class: "help", text: spec.help }),
      settingError(key),
      key === "precision" ? buildPrecisionInfo() : null);
  }

  function buildCheck(key, spec) {
    const input = el("input", {
      id: controlId(key), type: "checkbox", "data-testid": controlId(key),
      onchange: () => sendSetting(key, input.checked),
    });
    return el("div", { class: "setting check", "data-key": key },
      input,
      el("div", {},
        el("label", { for: controlId(key) }, spec.label, el("span", { class: "help", text: spec.help })),
        settingError(key)));
  }

  function buildClasses(key, spec, options, status) {
    const names = (status.model && status.model.classes) || [];
    const wrap = el("div", { class: "setting", "data-key": key, role: "group", "aria-labelledby": "label-classes" });
    const summary = el("span", { id: "value-classes", class: "setting-value", "data-testid": "value-classes" });
    wrap.append(el("div", { class: "setting-head" },
      el("span", { id: "label-classes", class: "label", text: spec.label }), summary));
    if (!names.length) {
      wrap.append(el("span", { class: "help", text: "Upload a model to pick which classes to show." }), settingError(key));
      return wrap;
    }
    const list = el("div", { id: controlId(key), class: "class-list", "data-testid": controlId(key) },
      ...names.map((name, id) => el("label", { title: name },
        el("input", { type: "checkbox", value: String(id), "data-class-id": String(id), onchange: sendClasses }),
        String(name))));
    const showAll = el("button", {
      type: "button", class: "link-btn", id: "classes-all", "data-testid": "classes-all", text: "Show all classes",
      onclick: () => {
        list.querySelectorAll("input").forEach((box) => { box.checked = false; });
        sendClasses();
      },
    });
    if (names.length > 12) {
      const search = el("input", {
        type: "search", class: "class-search", placeholder: "Filter class names…", "aria-label": "Filter class names",
        oninput: () => {
          const needle = search.value.trim().toLowerCase();
          list.querySelectorAll("label").forEach((label) => {
            label.hidden = Boolean(needle) && !label.textContent.toLowerCase().includes(needle);
          });
        },
      });
      wrap.append(search);
    }
    wrap.append(list,
      el("div", { class: "help" }, "Tick classes to show only those; none ticked shows all. ", showAll),
      settingError(key));
    return wrap;
  }

  function sendClasses() {
    const ids = [...$(controlId("classes")).querySelectorAll("input:checked")].map((box) => Number(box.value));
    sendSetting("classes", ids.length ? ids : null);
  }

  function queueSlider(key, read) {
    state.pendingSettings.add(key);
    clearTimeout(state.sliderTimers[key]);
    state.sliderTimers[key] = setTimeout(() => {
      state.sliderTimers[key] = null;
      sendSetting(key, read());
    }, SLIDER_DEBOUNCE_MS);
  }

  function flushSlider(key, read) {
    clearTimeout(state.sliderTimers[key]);
    state.sliderTimers[key] = null;
    sendSetting(key, read());
  }

  async function sendSetting(key, value) {
    state.pendingSettings.add(key);
    state.settingsEpoch += 1;
    const errorNode = $(`error-${key}`);
    try {
      const settings = await postJson("/api/settings", { [key]: value });
      if (state.status) state.status.settings = settings;
      if (errorNode) showText(errorNode, "");
    } catch (error) {
      if (errorNode) showText(errorNode, error.message);
    } finally {
      state.settingsEpoch += 1;
      // Still dragging (another send is queued): keep the poll's older value off the slider.
      if (!state.sliderTimers[key]) state.pendingSettings.delete(key);
      if (state.status) updateSettingValues(state.status.settings);
    }
  }

  function updateSettingValues(settings) {
    for (const [key, value] of Object.entries(settings || {})) {
      if (state.pendingSettings.has(key)) continue;
      const control = $(controlId(key));
      const spec = SETTING_SPECS[key];
      if (!control || !spec) continue;
      if (spec.type === "range") {
        control.value = String(value);
        $(`value-${key}`).textContent = spec.format(value);
      } else if (spec.type === "select") {
        control.value = JSON.stringify(value);
      } else if (spec.type === "check") {
        control.checked = Boolean(value);
      } else if (spec.type === "classes") {
        const chosen = new Set(value || []);
        control.querySelectorAll("input[type=checkbox]").forEach((box) => { box.checked = chosen.has(Number(box.value)); });
        const count = control.querySelectorAll("input[type=checkbox]").length;
        $("value-classes").textContent = chosen.size ? `${chosen.size} of ${count}` : "all";
        const showAll = $("classes-all");
        if (showAll) showAll.hidden = chosen.size === 0;
      }
    }
  }

  function renderSettings(status, settingsFresh) {
    if (!status.settings) return;
    const signature = settingsSignature(status);
    if (signature !== state.settingsSignature) {
      state.settingsSignature = signature;
      buildSettings(status);
      updateSettingValues(status.settings);
    } else if (settingsFresh) {
      updateSettingValues(status.settings);
    }
  }

  // "about 40 s left" from the server's estimate (eta_s is null until enough of the job is done to tell).
  function timeLeft(job) {
    if (typeof job.eta_s !== "number" || !Number.isFinite(job.eta_s)) return "";
    const seconds = Math.round(job.eta_s);
    const text = seconds >= 90 ? `${Math.round(seconds / 60)} min` : `${seconds} s`;
    return ` (about ${text} left)`;
  }

  function renderJob(job) {
    const box = $("job");
    const converting = job && job.kind === "convert";
    if (converting && state.uploading.model === "processing") {
      const fraction = Number(job.progress);
      const label = job.message || job.stage || "Converting to ONNX…";
      setProgress("model", Number.isFinite(fraction) && fraction > 0 ? fraction : null,
        `Converting to ONNX… ${Number.isFinite(fraction) ? Math.round(fraction * 100) + "%" : ""}`.trim());
      $("model-progress").title = label;
    }
    // This page's own conversion shows under the model zone; anything else (int8, another device's upload) here.
    if (!job || (converting && state.uploading.model)) { box.hidden = true; return; }
    const fraction = Number(job.progress);
    box.hidden = false;
    box.querySelector(".progress-fill").style.width = `${Math.round((Number.isFinite(fraction) ? fraction : 0) * 100)}%`;
    const title = { quantize: "Quantizing to INT8", convert: "Converting a model to ONNX" }[job.kind] || job.kind;
    box.querySelector(".job-text").textContent = `${title}: ${job.message || job.stage || "working"}…${timeLeft(job)}`;
  }

  // ---------- precision ----------

  function formatSpeedup(speedup) {
    return Number.isFinite(speedup) ? `${speedup.toFixed(1)}×` : "–";
  }

  function int8Failure(status) {
    return status.error && /int8/i.test(status.error) ? status.error : "";
  }

  // One sentence on what actually runs, which may differ from the setting while int8 is tuned.
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
    let why = "INT8 will be tuned once a video and a model are uploaded";
    if (precision.building) why = "INT8 is being tuned on this device…";
    else if (int8Failure(status)) why = int8Failure(status);
    else if (status.video && status.model) why = "INT8 will be tuned when the stream starts";
    return { kind: precision.building ? "tuning" : "waiting", text: `Running FP32 — ${why}` };
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
    const table = el("table", { id: "int8-table", class: "tuning-table", "data-testid": "int8-table" },
      el("thead", {}, el("tr", {},
        ...["Recipe", "ms", "Speed-up", "Agree\u00ADment"].map((name) => el("th", { scope: "col", text: name })))),
      el("tbody", {}, reference, ...(report.rows || []).map((row) => tuningRow(row, report))));
    const failures = (report.rows || []).filter((row) => row.error);
    const details = el("details", { class: "tuning", "data-testid": "int8-tuning", open: state.tuningOpen },
      el("summary", { text: "What the INT8 tuning tried" }),
      el("div", { class: "table-scroll", role: "region", "aria-label": "INT8 tuning results", tabindex: "0" }, table),
      failures.length ? el("ul", { class: "tuning-errors", "data-testid": "int8-errors" },
        ...failures.map((row) => el("li", {}, el("b", { text: row.recipe }), ` could not be used: ${row.error}`))) : null,
      el("p", { id: "int8-note", class: "tuning-note", "data-testid": "int8-note", text: report.note }),
      el("p", { class: "tuning-facts",
        text: `✓ marks the recipe in use. Agreement is how closely its boxes match FP32's; `
          + `${Number(report.min_agreement).toFixed(2)} is needed to qualify (lower ones in orange). `
          + `Tuned at ${report.imgsz} px in ${formatNumber(report.seconds, 0)} s.` }));
    details.addEventListener("toggle", () => { state.tuningOpen = details.open; });
    return details;
  }

  function buildPrecisionInfo() {
    return el("div", { id: "precision-info", class: "precision-info", "data-testid": "precision-info", hidden: true },
      el("p", { id: "precision-active", class: "precision-active", "data-testid": "precision-active", role: "status" }),
      el("div", { id: "int8-tuning-slot" }));
  }

  function renderPrecision(status) {
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
    if (signature === state.precisionSignature) return;
    state.precisionSignature = signature;
    $("int8-tuning-slot").replaceChildren(...(report ? [tuningTable(report)] : []));
  }

  // ---------- page state ----------

  function renderControls() {
    const status = state.status;
    const streaming = Boolean(status && status.streaming);
    const uploading = Boolean(state.uploading.video || state.uploading.model);
    const haveBoth = Boolean(status && (status.video || status.source) && status.model);

    $("start-btn").disabled = !status || streaming || !haveBoth || uploading || state.busy || state.offline;
    $("stop-btn").disabled = !streaming || state.busy || state.offline;
    $("trace-btn").disabled = !streaming || state.tracing || state.offline;

    let hint = "";
    if (status && !streaming && !haveBoth) {
      const missing = [!status.video && !status.source && "a video or a stream", !status.model && "a model"].filter(Boolean).join(" and ");
      hint = `Start needs ${missing}.`;
    }
    $("start-hint").textContent = hint;

    for (const kind of ["video", "model"]) {
      const locked = streaming || Boolean(state.uploading[kind]);
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

  function renderStatusPill(status) {
    const pill = $("status-pill");
    let stateName = "stopped";
    let text = "Stopped";
    if (state.offline) { stateName = "offline"; text = "Server unreachable"; }
    else if (!status) { stateName = "connecting"; text = "Connecting…"; }
    else if (status.job) { stateName = "busy"; text = status.job.kind === "quantize" ? "Quantizing…" : "Converting…"; }
    else if (status.streaming) { stateName = "streaming"; text = "Streaming"; }
    else if ((status.video || status.source) && status.model) { text = "Ready"; }
    pill.dataset.state = stateName;
    pill.textContent = text;
  }

  function renderLan(urls) {
    const list = $("lan-urls");
    const items = (urls || []).map((url) => el("li", {}, el("a", { href: url, text: url })));
    if (!items.length) items.push(el("li", { class: "hint", text: "No network address found: is this device on Wi-Fi or Ethernet?" }));
    list.replaceChildren(...items);
  }

  function renderAll(settingsFresh = true) {
    const status = state.status;
    renderStatusPill(status);
    renderControls();
    if (!status) return;
    $("demo-banner").hidden = !status.demo;
    if (!state.uploading.video) renderVideoInfo(status.video);
    if (!state.uploading.model) renderModelInfo(status.model);
    renderStream(status);
    renderStats(shownStats(status));
    if (window.edgeSource) window.edgeSource.render(status);  // static/source.js
    renderSettings(status, settingsFresh);
    // A poll that crossed a settings change pairs the new setting with old tuning state: wait for a fresh one.
    if (settingsFresh) renderPrecision(status);
    renderJob(status.job);
    renderLan(status.lan_urls);
  }

  async function poll() {
    const actionEpoch = state.actionEpoch;
    const settingsEpoch = state.settingsEpoch;
    try {
      const response = await fetch("/api/status", { cache: "no-store" });
      // Signed out (cookie expired, password changed): the server shows its sign-in page on reload.
      if (response.status === 401) window.location.reload();
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const status = await response.json();
      state.offline = false;
      if (actionEpoch !== state.actionEpoch && state.status) {
        // An upload/start/stop finished while this poll was in flight: keep what that action told us.
        status.streaming = state.status.streaming;
        status.video = state.status.video;
        status.model = state.status.model;
      }
      const settingsFresh = settingsEpoch === state.settingsEpoch;
      if (!settingsFresh && state.status) status.settings = state.status.settings;
      state.status = status;
      renderAll(settingsFresh);
    } catch (_) {
      state.offline = true;
      renderStatusPill(state.status);
      renderControls();
    } finally {
      setTimeout(poll, POLL_MS);
    }
  }

  // ---------- reset ----------

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
        await postJson("/reset");
        window.location.reload();
      } catch (error) {
        showText($("reset-error"), error.message);
      }
    });
  }

  function init() {
    setupDropZone("video");
    setupDropZone("model");
    setupReset();
    $("start-btn").addEventListener("click", startStream);
    $("stop-btn").addEventListener("click", stopStream);
    $("trace-btn").addEventListener("click", recordTrace);
    $("stream").addEventListener("error", onStreamError);
    // Settings apply on change; Enter in a field must not submit the form (no inline handler: CSP).
    $("settings").addEventListener("submit", (event) => event.preventDefault());
    // A file dropped next to a zone would otherwise make the browser navigate away to it.
    window.addEventListener("dragover", (event) => event.preventDefault());
    window.addEventListener("drop", (event) => event.preventDefault());
    renderStats(null);
    poll();
  }

  init();
})();
