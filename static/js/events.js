// The events list: what the server recorded (GET /api/events), newest first, with thumbnails and a class filter.
// The events list: main.js calls initEvents(root) on the page's events section.

const POLL_MS = 2000;
const LIMIT = 20;

async function requestJson(url, options = {}) {
  const response = await fetch(url, { credentials: "same-origin", ...options });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(data.error || `HTTP ${response.status}`);
  return data;
}

function clockTime(iso) {
  return iso ? new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" }) : "";
}

function lasted(event) {
  if (event.open) return "ongoing";
  const seconds = Math.max(0, event.end_ts - event.start_ts);
  return seconds < 60 ? `${seconds.toFixed(1)} s` : `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
}

function node(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "text") element.textContent = value;
    else if (value !== null && value !== undefined) element.setAttribute(name, value);
  }
  element.append(...children.filter(Boolean));
  return element;
}

function eventItem(event) {
  const picture = event.crop_url || event.snapshot_url;
  const thumb = picture
    ? node("img", { class: "event-thumb", src: picture, alt: `${event.class} at ${clockTime(event.start)}`,
      loading: "lazy", width: "64", height: "64", "data-testid": "event-thumb" })
    : node("span", { class: "event-thumb empty", "aria-hidden": "true" });
  const link = event.snapshot_url
    ? node("a", { href: event.snapshot_url, target: "_blank", rel: "noopener", class: "event-link",
      title: "Open the annotated frame at its best score" }, thumb)
    : thumb;
  const facts = [clockTime(event.start), lasted(event)];
  if (event.video_start_s !== null) facts.push(`video ${event.video_start_s.toFixed(1)} s`);
  return node("li", { class: "event", "data-testid": "event", "data-event-id": String(event.id),
    "data-open": event.open ? "true" : "false" },
  link,
  node("div", { class: "event-text" },
    node("div", { class: "event-title" },
      node("b", { text: event.class, "data-testid": "event-class" }),
      node("span", { class: "event-score", text: `${Math.round(event.best_score * 100)}%` }),
      event.open ? node("span", { class: "event-live", text: "live" }) : null),
    node("div", { class: "event-facts", text: facts.join(" · ") }),
    node("div", { class: "event-source", text: event.source })));
}

function summaryText(status) {
  if (!status) return "";
  const parts = [`${status.count} stored`];
  if (status.open) parts.push(`${status.open} open`);
  if (status.dropped) parts.push(`${status.dropped} saves dropped`);
  if (!status.enabled) parts.push("recording off");
  return parts.join(" · ");
}

export function initEvents(root) {
  if (root.eventsController) return root.eventsController;  // imported and started twice: one poller
  const $ = (name) => root.querySelector(`[data-events-${name}]`);
  const list = $("list");
  const filter = $("class");
  const shown = new Map();  // event id -> [signature, list item]: unchanged events keep their element
  let timer = null;
  let busy = false;

  function showError(text) {
    const box = $("error");
    box.textContent = text || "";
    box.hidden = !text;
  }

  function renderClasses(classes) {
    const chosen = filter.value;
    const wanted = ["", ...new Set([...classes, ...(chosen ? [chosen] : [])])];
    const have = [...filter.options].map((option) => option.value);
    if (have.join("\n") === wanted.join("\n")) return;
    filter.replaceChildren(...wanted.map((name) => node("option", { value: name, text: name || "All classes" })));
    filter.value = chosen;
  }

  function render(data) {
    renderClasses(data.classes || []);
    $("summary").textContent = summaryText(data.status);
    const items = data.events.map((event) => {
      const signature = [event.crop_url, event.snapshot_url, event.open, event.end_ts].join("|");
      const known = shown.get(event.id);
      if (known && known[0] === signature) return known[1];
      const item = eventItem(event);
      shown.set(event.id, [signature, item]);
      return item;
    });
    const ids = new Set(data.events.map((event) => event.id));
    for (const id of shown.keys()) if (!ids.has(id)) shown.delete(id);
    list.replaceChildren(...items);
    $("empty").hidden = items.length > 0;
    const csv = $("csv");
    csv.href = "/api/events.csv" + (filter.value ? `?class=${encodeURIComponent(filter.value)}` : "");
  }

  async function refresh() {
    if (busy) return;
    busy = true;
    try {
      const query = new URLSearchParams({ limit: String(LIMIT) });
      if (filter.value) query.set("class", filter.value);
      render(await requestJson(`/api/events?${query}`));
      showError("");
    } catch (error) {
      showError(`Events: ${error.message}`);
    } finally {
      busy = false;
    }
  }

  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      if (!document.hidden) await refresh();
      schedule();
    }, POLL_MS);
  }

  async function clearAll() {
    const button = $("clear");
    button.disabled = true;
    try {
      await requestJson("/api/events", { method: "DELETE" });
      await refresh();
    } catch (error) {
      showError(`Events: ${error.message}`);
    } finally {
      button.disabled = false;
    }
  }

  filter.addEventListener("change", refresh);
  $("clear").addEventListener("click", clearAll);
  refresh();
  schedule();
  root.eventsController = { refresh, stop: () => clearTimeout(timer) };
  return root.eventsController;
}

