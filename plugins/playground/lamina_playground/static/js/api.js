// The server's /v1 API as the page uses it: JSON requests, SSE streams and uploads, with the API key attached
// and asked for again whenever the server answers 401.

const KEY_STORAGE = "lamina.playground.apiKey";
export const apiBase = new URL("../v1/", document.baseURI);

export class ApiError extends Error {
  constructor(status, error) {
    super(error?.message || `HTTP ${status}`);
    this.status = status;
    this.type = error?.type;
    this.code = error?.code;
    this.param = error?.param;
  }
}

export const apiKey = () => localStorage.getItem(KEY_STORAGE) || "";

function authHeaders() {
  const key = apiKey();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

let pendingAsk = null;

// One dialog for every request that got a 401 at the same time; resolves to true once a key is saved.
export function askForKey(reason = "") {
  if (pendingAsk) return pendingAsk;
  const dialog = document.getElementById("key-dialog");
  const input = document.getElementById("key-input");
  document.getElementById("key-reason").textContent = reason;
  input.value = apiKey();
  pendingAsk = new Promise((resolve) => {
    dialog.addEventListener(
      "close",
      () => {
        pendingAsk = null;
        if (dialog.returnValue === "save" && input.value.trim()) {
          localStorage.setItem(KEY_STORAGE, input.value.trim());
          resolve(true);
        } else {
          if (dialog.returnValue === "clear") localStorage.removeItem(KEY_STORAGE);
          resolve(false);
        }
      },
      { once: true },
    );
    dialog.showModal();
    input.focus();
  });
  return pendingAsk;
}

async function errorOf(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON: the status says enough
  }
  return new ApiError(response.status, body?.error || { message: `${response.status} ${response.statusText}` });
}

async function unauthorized(response) {
  const error = await errorOf(response);
  const saved = await askForKey(`The server refused the request (401): ${error.message}`);
  if (!saved) throw error;
}

// `path` is relative to /v1/ ("models", "vector_stores/x/search"). `raw` returns the Response (for streams).
export async function api(path, { method = "GET", body, signal, raw = false } = {}) {
  for (;;) {
    const headers = authHeaders();
    const init = { method, headers, signal };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(new URL(path, apiBase), init);
    if (response.status === 401) {
      await unauthorized(response);
      continue;
    }
    if (!response.ok) throw await errorOf(response);
    return raw ? response : response.json();
  }
}

// Server-sent events of an OpenAI stream, parsed; ends at `[DONE]` or when the body ends.
export async function* events(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let end;
      while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, "");
        const data = block
          .split(/\r?\n/)
          .filter((line) => line.startsWith("data:"))
          .map((line) => line.slice(5).trimStart())
          .join("\n");
        if (!data) continue;
        if (data === "[DONE]") return;
        yield JSON.parse(data);
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

// Upload a file to /v1/files with progress (fetch cannot report upload progress; XMLHttpRequest can).
export function uploadFile(file, purpose, onProgress) {
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    request.open("POST", new URL("files", apiBase));
    for (const [name, value] of Object.entries(authHeaders())) request.setRequestHeader(name, value);
    request.responseType = "json";
    request.upload.onprogress = (event) => event.lengthComputable && onProgress(event.loaded / event.total);
    request.onerror = () => reject(new ApiError(0, { message: "network error while uploading" }));
    request.onload = async () => {
      if (request.status === 401) {
        const saved = await askForKey("The server refused the upload (401).");
        if (saved) uploadFile(file, purpose, onProgress).then(resolve, reject);
        else reject(new ApiError(401, request.response?.error));
      } else if (request.status >= 400) {
        reject(new ApiError(request.status, request.response?.error));
      } else {
        resolve(request.response);
      }
    };
    const form = new FormData();
    form.append("purpose", purpose);
    form.append("file", file, file.name);
    request.send(form);
  });
}
