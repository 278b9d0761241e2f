// What this tab knows and is doing, shared by the page's modules, and the hook that redraws everything.

export const page = {
  status: null,            // the last GET /api/status answer
  offline: false,          // the last poll failed
  busy: false,             // a start or stop request is on its way
  tracing: false,          // a trace is being recorded
  // Per kind: "sending" while bytes go up, "processing" while the server checks/converts, else false.
  uploading: { video: false, model: false },
  // Bumped when an action (upload, start, stop) changes the status: a poll sent before it is stale.
  actionEpoch: 0,
};

let redraw = () => {};

// main.js registers the full redraw; the other modules call renderAll() after changing page.status.
export function onRenderAll(fn) { redraw = fn; }

export function renderAll(settingsFresh = true) { redraw(settingsFresh); }

export function actionDone() { page.actionEpoch += 1; }
