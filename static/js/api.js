// Requests to this server. Each helper resolves with the parsed answer or throws an ApiError whose message is
// the server's own {"error": "..."} text (or a plain sentence when the answer carries none).

export class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.name = "ApiError";
    this.status = status;  // the HTTP status, 0 when no answer came
  }
}

export function friendlyHttpError(code) {
  if (code === 413) return "The file is too large for this server.";
  if (code === 409) return "Not possible right now: stop the stream first.";
  if (code >= 500) return `The server failed (HTTP ${code}). Check its log.`;
  return `Request failed (HTTP ${code}).`;
}

async function failure(response) {
  let message = "";
  try {
    const data = await response.json();
    if (data && data.error) message = data.error;
  } catch (_) { /* not JSON: a generic sentence below */ }
  return new ApiError(message || friendlyHttpError(response.status), response.status);
}

async function request(path, init) {
  const response = await fetch(path, { cache: "no-store", ...init });
  if (!response.ok) throw await failure(response);
  return response;
}

export async function getJSON(path) {
  return (await request(path)).json();
}

export async function postJSON(path, body = {}) {
  const response = await request(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  return response.json();
}

// The answer as a Blob (a file to save, such as a trace).
export async function getBlob(path) {
  return (await request(path)).blob();
}

// POST file as the multipart field "file". onProgress(fraction) follows the bytes going up and is called with 1
// once all are sent (the server then checks or converts the file before it answers).
export function upload(path, file, onProgress = () => {}) {
  return new Promise((resolve, reject) => {
    const form = new FormData();
    form.append("file", file, file.name);
    const xhr = new XMLHttpRequest();
    xhr.open("POST", path);
    xhr.upload.onprogress = (event) => {
      if (event.lengthComputable && event.loaded < event.total) onProgress(event.loaded / event.total);
    };
    xhr.upload.onload = () => onProgress(1);
    xhr.onload = () => {
      let data = null;
      try { data = JSON.parse(xhr.responseText); } catch (_) { data = null; }
      if (xhr.status >= 200 && xhr.status < 300 && data) resolve(data);
      else reject(new ApiError((data && data.error) || friendlyHttpError(xhr.status), xhr.status));
    };
    const interrupted = () => reject(new ApiError(
      "The upload was interrupted: the file may be larger than the server accepts, or the connection dropped.", 0));
    xhr.onerror = interrupted;
    xhr.onabort = interrupted;
    xhr.ontimeout = interrupted;
    xhr.send(form);
  });
}
