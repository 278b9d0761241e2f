// One control per setting (slider, select, checkbox, class list) and the sending of its changes:
// POST /api/settings with the one key, sliders debounced while dragged.

import { postJSON } from "./api.js";
import { $, el, showText } from "./dom.js";
import { page } from "./page.js";
import { buildPrecisionInfo } from "./precision.js";

const SLIDER_DEBOUNCE_MS = 250;

const sending = {
  // Bumped by every change sent: a poll that started before it carries stale settings.
  epoch: 0,
  pending: new Set(),  // keys whose sent value the poll must not overwrite yet
  timers: {},
};
const built = new Map();  // key -> spec of the controls in the form now

export function settingsEpoch() { return sending.epoch; }

const controlId = (key) => `setting-${key}`;

function settingError(key) {
  return el("p", { id: `error-${key}`, class: "error-text", "data-testid": `error-${key}`, role: "alert", hidden: true });
}

function help(key, spec) {
  return el("span", { id: `help-${key}`, class: "help", text: spec.help });
}

// A slider spans the server's [low, high]; a key in options.above_low must be greater than low.
function sliderBounds(key, spec, options) {
  const [low, high] = options[key];
  const aboveLow = (options.above_low || []).includes(key);
  return [aboveLow ? low + spec.step : low, high];
}

function buildRange(key, spec, status) {
  const [min, max] = sliderBounds(key, spec, status.options);
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
    input, help(key, spec), settingError(key));
}

function buildSelect(key, spec, status) {
  const choices = [...spec.choices(status.options)];
  const current = status.settings[key];
  if (!choices.some((c) => c === current)) choices.push(current);
  const select = el("select", {
    id: controlId(key), "data-testid": controlId(key), "aria-describedby": `help-${key}`,
    onchange: () => sendSetting(key, JSON.parse(select.value)),
  }, ...choices.map((choice) => el("option", { value: JSON.stringify(choice), text: spec.format(choice) })));
  return el("div", { class: "setting", "data-key": key },
    el("div", { class: "setting-head" }, el("label", { for: controlId(key), text: spec.label })),
    select, help(key, spec), settingError(key),
    key === "engine" ? buildPrecisionInfo() : null);
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

function classFilter(list) {
  const search = el("input", {
    type: "search", class: "class-search", placeholder: "Filter class names…", "aria-label": "Filter class names",
    oninput: () => {
      const needle = search.value.trim().toLowerCase();
      list.querySelectorAll("label").forEach((label) => {
        label.hidden = Boolean(needle) && !label.textContent.toLowerCase().includes(needle);
      });
    },
  });
  return search;
}

function buildClasses(key, spec, status) {
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
  if (names.length > 12) wrap.append(classFilter(list));
  wrap.append(list,
    el("div", { class: "help" }, "Tick classes to show only those; none ticked shows all. ", showAll),
    settingError(key));
  return wrap;
}

const BUILDERS = { range: buildRange, select: buildSelect, check: buildCheck, classes: buildClasses };

export function buildControl(key, spec, status) {
  built.set(key, spec);
  return BUILDERS[spec.type](key, spec, status);
}

function sendClasses() {
  const ids = [...$(controlId("classes")).querySelectorAll("input:checked")].map((box) => Number(box.value));
  sendSetting("classes", ids.length ? ids : null);
}

function queueSlider(key, read) {
  sending.pending.add(key);
  clearTimeout(sending.timers[key]);
  sending.timers[key] = setTimeout(() => {
    sending.timers[key] = null;
    sendSetting(key, read());
  }, SLIDER_DEBOUNCE_MS);
}

function flushSlider(key, read) {
  clearTimeout(sending.timers[key]);
  sending.timers[key] = null;
  sendSetting(key, read());
}

async function sendSetting(key, value) {
  sending.pending.add(key);
  sending.epoch += 1;
  const errorNode = $(`error-${key}`);
  try {
    const settings = await postJSON("/api/settings", { [key]: value });
    if (page.status) page.status.settings = settings;
    if (errorNode) showText(errorNode, "");
  } catch (error) {
    if (errorNode) showText(errorNode, error.message);
  } finally {
    sending.epoch += 1;
    // Still dragging (another send is queued): keep the poll's older value off the slider.
    if (!sending.timers[key]) sending.pending.delete(key);
    if (page.status) updateSettingValues(page.status.settings);
  }
}

function showClasses(control, value) {
  const chosen = new Set(value || []);
  const boxes = control.querySelectorAll("input[type=checkbox]");
  boxes.forEach((box) => { box.checked = chosen.has(Number(box.value)); });
  $("value-classes").textContent = chosen.size ? `${chosen.size} of ${boxes.length}` : "all";
  const showAll = $("classes-all");
  if (showAll) showAll.hidden = chosen.size === 0;
}

// Put the server's values into the controls, except those with a change of this tab's still on its way.
export function updateSettingValues(settings) {
  for (const [key, value] of Object.entries(settings || {})) {
    if (sending.pending.has(key)) continue;
    const control = $(controlId(key));
    const spec = built.get(key);
    if (!control || !spec) continue;
    if (spec.type === "range") {
      control.value = String(value);
      $(`value-${key}`).textContent = spec.format(value);
    } else if (spec.type === "select") {
      control.value = JSON.stringify(value);
    } else if (spec.type === "check") {
      control.checked = Boolean(value);
    } else if (spec.type === "classes") {
      showClasses(control, value);
    }
  }
}
