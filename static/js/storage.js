// One line under the file zones: free space on the uploads disk, and what the server keeps in reserve.
import { getJSON } from "./api.js";

const POLL_MS = 5000;
const line = document.getElementById("storage-line");

function size(bytes) {
  const mb = bytes / (1024 * 1024);
  return mb >= 1024 ? `${(mb / 1024).toFixed(1)} GB` : `${Math.floor(mb)} MB`;
}

async function refresh() {
  try {
    const { storage } = await getJSON("/api/status");
    if (storage) {
      const usable = Math.max(0, storage.free_bytes - storage.reserve_bytes);
      line.textContent = `Free space: ${size(usable)} for uploads and exports ` +
        `(${size(storage.reserve_bytes)} kept free; uploads use ${size(storage.folder_bytes)})`;
      line.hidden = false;
    }
  } catch {
    // the page's own status poll shows a server that is down; this line just waits for the next try
  } finally {
    setTimeout(refresh, POLL_MS);
  }
}

refresh();
