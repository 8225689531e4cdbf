// Agents: one streamed Responses API call with tools (file_search over a vector store, MCP servers), its answer
// and a timeline of the tool calls it made.

import { ApiError, api, events } from "./api.js";
import { $, el, fillSelect, json } from "./ui.js";

const STORAGE = "lamina.playground.agents";
const TOOL_ITEMS = new Set(["file_search_call", "mcp_list_tools", "mcp_call", "function_call"]);
let settings = loadSettings();
let running = null; // the AbortController of the response in flight

function loadSettings() {
  try {
    const saved = JSON.parse(localStorage.getItem(STORAGE));
    if (saved && Array.isArray(saved.mcp)) return saved;
  } catch {
    // a broken entry starts afresh
  }
  return { mcp: [] };
}

function readSettings() {
  const form = $("agent-settings");
  settings = {
    model: form.model.value,
    instructions: form.instructions.value,
    use_search: form.use_search.checked,
    store: form.store.value,
    force_search: form.force_search.checked,
    mcp: settings.mcp,
  };
  localStorage.setItem(STORAGE, JSON.stringify(settings));
}

export async function loadAgents() {
  const [models, stores] = await Promise.all([api("models"), api("vector_stores?limit=100")]);
  const chatModels = models.data.filter((m) => m.model_type !== "embedding");
  fillSelect($("agent-model"), chatModels.map((m) => [m.id, m.id]), settings.model || $("agent-model").value);
  const options = stores.data.length ? stores.data.map((s) => [s.id, s.name || s.id]) : [["", "none yet (Documents tab)"]];
  fillSelect($("agent-store"), options, settings.store || $("agent-store").value);
}

function renderServers() {
  $("agent-mcp-list").replaceChildren(
    ...settings.mcp.map((server, index) =>
      el(
        "li",
        {},
        el("span", { class: "name" }, `${server.server_label} · ${server.server_url}`),
        el(
          "button",
          {
            type: "button",
            class: "quiet",
            "aria-label": `Remove server ${server.server_label}`,
            onclick: () => {
              settings.mcp.splice(index, 1);
              readSettings();
              renderServers();
            },
          },
          "Remove",
        ),
      ),
    ),
  );
  if (!settings.mcp.length) $("agent-mcp-list").append(el("li", { class: "muted" }, "None."));
}

function addServer() {
  const label = $("agent-mcp-label");
  const url = $("agent-mcp-url");
  if (!label.value.trim() || !url.value.trim() || !url.checkValidity()) {
    (label.value.trim() ? url : label).focus();
    return;
  }
  settings.mcp.push({ server_label: label.value.trim(), server_url: url.value.trim() });
  label.value = url.value = "";
  readSettings();
  renderServers();
}

function tools() {
  const list = [];
  if (settings.use_search && settings.store) list.push({ type: "file_search", vector_store_ids: [settings.store] });
  for (const server of settings.mcp) list.push({ type: "mcp", ...server, require_approval: "never" });
  return list;
}

// An MCP error is a string, an OpenAI-style error, or the tool's own content parts.
const errorText = (error) =>
  typeof error === "string" ? error : error.message || error.content?.map((part) => part.text).join("\n") || json(error);

// What a timeline entry says in one line, and what it shows when opened.
function describe(item) {
  const failed = item.status === "failed" || item.error;
  switch (item.type) {
    case "file_search_call": {
      const results = item.results || [];
      return [
        `${(item.queries || []).join("; ")} · ${item.results ? `${results.length} results` : item.status}`,
        el(
          "ol",
          { class: "results", "aria-label": "Results" },
          results.map((r) =>
            el(
              "li",
              { class: "result" },
              el("div", { class: "meta" }, el("span", { class: "score" }, r.score.toFixed(3)), ` · ${r.filename || r.file_id}`),
              el("div", { class: "chunk" }, r.text),
            ),
          ),
        ),
      ];
    }
    case "mcp_list_tools":
      return [
        `${item.server_label} · ${failed ? "failed" : `${(item.tools || []).length} tools`}`,
        el("ul", {}, (item.tools || []).map((t) => el("li", {}, el("code", {}, t.name), t.description ? ` — ${t.description}` : ""))),
      ];
    case "mcp_call":
      return [
        `${item.server_label}.${item.name}(${item.arguments || ""})${failed ? " · failed" : ""}`,
        el("pre", { class: "code" }, item.error ? `error: ${errorText(item.error)}` : item.output ?? "(running)"),
      ];
    default: // function_call: run by the client, not here
      return [
        `${item.name}(${item.arguments || ""})`,
        el("p", { class: "muted" }, "A function tool: the client runs it and answers with a function_call_output."),
      ];
  }
}

function renderItem(item) {
  const [summary, body] = describe(item);
  const failed = item.status === "failed" || Boolean(item.error);
  return el(
    "li",
    { class: failed ? "failed" : item.status, "data-type": item.type, "data-id": item.id },
    el(
      "details",
      {},
      el("summary", {}, el("span", { class: "kind" }, item.type), ` ${summary}`),
      body,
      el("details", {}, el("summary", {}, "Full item"), el("pre", { class: "code" }, json(item))),
    ),
  );
}

function showItem(item) {
  if (!TOOL_ITEMS.has(item.type)) return;
  const timeline = $("agent-timeline");
  const entry = renderItem(item);
  const old = [...timeline.children].find((li) => li.dataset.id === item.id);
  if (old) {
    entry.querySelector("details").open = old.querySelector("details").open;
    old.replaceWith(entry);
  } else {
    timeline.append(entry);
  }
}

async function run(prompt) {
  readSettings();
  if (!settings.model) throw new ApiError(0, { message: "no chat model is available" });
  const answer = $("agent-answer");
  const status = $("agent-status");
  answer.textContent = "";
  answer.classList.add("streaming");
  $("agent-timeline").replaceChildren();
  running = new AbortController();
  $("agent-run").disabled = true;
  $("agent-stop").disabled = false;
  status.textContent = "Running…";
  const body = { model: settings.model, input: prompt, stream: true, include: ["file_search_call.results"] };
  if (settings.instructions.trim()) body.instructions = settings.instructions.trim();
  const attached = tools();
  if (attached.length) body.tools = attached;
  if (settings.force_search && attached.some((t) => t.type === "file_search")) body.tool_choice = { type: "file_search" };
  let ending = "";
  const cited = [];
  try {
    const response = await api("responses", { method: "POST", body, signal: running.signal, raw: true });
    for await (const event of events(response)) {
      if (event.type === "response.output_text.delta") answer.textContent += event.delta;
      else if (event.type === "response.output_text.annotation.added") cited.push(event.annotation.filename || event.annotation.file_id);
      else if (event.type === "response.output_item.added" || event.type === "response.output_item.done") showItem(event.item);
      else if (event.type === "error") throw new ApiError(502, event);
      else if (["response.completed", "response.incomplete", "response.failed"].includes(event.type)) {
        const r = event.response;
        ending = r.status + (r.incomplete_details ? ` (${r.incomplete_details.reason})` : "") + (r.error ? `: ${r.error.message}` : "");
        if (r.usage) ending += ` · ${r.usage.input_tokens} in, ${r.usage.output_tokens} out tokens`;
        if (cited.length) ending += ` · cites ${cited.join(", ")}`;
      }
    }
    status.textContent = ending || "The stream ended without a final event.";
  } catch (error) {
    status.replaceChildren(el("span", { class: "error" }, error.name === "AbortError" ? "Stopped." : error.message));
  } finally {
    running = null;
    answer.classList.remove("streaming");
    $("agent-run").disabled = false;
    $("agent-stop").disabled = true;
  }
}

export function initAgents() {
  const form = $("agent-settings");
  for (const name of ["instructions"]) if (settings[name] !== undefined) form[name].value = settings[name];
  form.use_search.checked = Boolean(settings.use_search);
  form.force_search.checked = Boolean(settings.force_search);
  renderServers();
  form.addEventListener("change", readSettings);
  form.addEventListener("submit", (event) => event.preventDefault());
  $("agent-mcp-add").addEventListener("click", addServer);
  for (const id of ["agent-mcp-label", "agent-mcp-url"]) {
    $(id).addEventListener("keydown", (event) => {
      if (event.key === "Enter") {
        event.preventDefault();
        addServer();
      }
    });
  }
  $("agent-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("agent-input").value.trim();
    if (!text || running) return;
    run(text);
  });
  $("agent-input").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("agent-form").requestSubmit();
    }
  });
  $("agent-stop").addEventListener("click", () => running?.abort());
}
