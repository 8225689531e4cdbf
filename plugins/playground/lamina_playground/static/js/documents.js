// Documents: vector stores, uploads with ingestion progress, and search.

import { api, uploadFile } from "./api.js";
import { setStores } from "./chat.js";
import { $, el, fillSelect, showError } from "./ui.js";

const filenames = new Map(); // file id -> name, for listing a store's files
const POLL_MS = 400;

const store = () => $("docs-store").value;

export async function loadStores() {
  const stores = (await api("vector_stores?limit=100")).data;
  const select = $("docs-store");
  fillSelect(select, stores.map((s) => [s.id, `${s.name || s.id}`]));
  setStores(stores);
  const current = stores.find((s) => s.id === select.value);
  $("docs-store-info").textContent = current
    ? `${current.id} · ${current.file_counts.completed} of ${current.file_counts.total} files ingested`
    : "No vector store yet: create one.";
  await loadFiles();
}

async function loadFiles() {
  const list = $("docs-files");
  if (!store()) {
    list.replaceChildren();
    return;
  }
  const files = (await api(`vector_stores/${encodeURIComponent(store())}/files?limit=100`)).data;
  const unknown = files.some((f) => !filenames.has(f.id));
  if (unknown) for (const f of (await api("files?limit=10000")).data) filenames.set(f.id, f.filename);
  list.replaceChildren(
    ...files.map((f) =>
      el(
        "li",
        {},
        el("span", { class: "name" }, filenames.get(f.id) || f.id),
        el("span", { class: `badge ${f.status}` }, f.status),
        f.last_error ? el("span", { class: "error" }, f.last_error.message) : null,
      ),
    ),
  );
  if (!files.length) list.append(el("li", { class: "muted" }, "No files yet."));
}

function uploadRow(file) {
  const bar = el("progress", { max: "1", value: "0", "aria-label": `Progress of ${file.name}` });
  const status = el("span", { class: "status" }, "uploading");
  const row = el("li", {}, el("span", { class: "name" }, file.name), bar, status);
  $("docs-uploads").prepend(row);
  return {
    row,
    progress(value, text) {
      if (value === null) bar.removeAttribute("value");
      else bar.value = value;
      status.textContent = text;
    },
  };
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function ingest(file) {
  const target = store();
  const row = uploadRow(file);
  try {
    if (!target) throw new Error("create or choose a vector store first");
    const uploaded = await uploadFile(file, "assistants", (share) =>
      row.progress(share, `uploading ${Math.round(share * 100)}%`),
    );
    filenames.set(uploaded.id, uploaded.filename);
    row.progress(null, "ingesting");
    const path = `vector_stores/${encodeURIComponent(target)}/files`;
    let attached = await api(path, { method: "POST", body: { file_id: uploaded.id } });
    while (attached.status === "in_progress") {
      await sleep(POLL_MS);
      attached = await api(`${path}/${encodeURIComponent(uploaded.id)}`);
    }
    if (attached.status !== "completed") throw new Error(attached.last_error?.message || attached.status);
    row.progress(1, "ingested");
    row.row.classList.add("done");
  } catch (error) {
    row.progress(0, `failed: ${error.message}`);
    row.row.classList.add("failed");
  }
  await loadStores().catch(() => {});
}

async function search(event) {
  event.preventDefault();
  const status = $("docs-search-status");
  const results = $("docs-results");
  status.textContent = "Searching…";
  results.replaceChildren();
  try {
    const found = await api(`vector_stores/${encodeURIComponent(store())}/search`, {
      method: "POST",
      body: { query: $("docs-query").value, max_num_results: Number($("docs-max").value) || 5 },
    });
    status.textContent = `${found.data.length} result${found.data.length === 1 ? "" : "s"}`;
    results.replaceChildren(
      ...found.data.map((r) =>
        el(
          "li",
          { class: "result" },
          el("div", { class: "meta" }, el("span", { class: "score" }, r.score.toFixed(3)), " ", r.filename || r.file_id),
          el("div", { class: "chunk" }, r.content.map((c) => c.text).join("\n")),
        ),
      ),
    );
  } catch (error) {
    showError(status, error);
  }
}

export function initDocuments() {
  $("store-create").addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const created = await api("vector_stores", { method: "POST", body: { name: $("store-name").value } });
      $("store-name").value = "";
      await loadStores();
      $("docs-store").value = created.id;
      await loadStores();
    } catch (error) {
      showError($("docs-store-info"), error);
    }
  });
  $("docs-store").addEventListener("change", () => loadStores().catch((e) => showError($("docs-store-info"), e)));
  $("docs-file").addEventListener("change", (event) => {
    for (const file of event.target.files) ingest(file);
    event.target.value = "";
  });
  const drop = $("docs-drop");
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    for (const file of event.dataTransfer.files) ingest(file);
  });
  $("docs-search").addEventListener("submit", search);
}
