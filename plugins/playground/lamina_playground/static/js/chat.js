// Chat: streamed chat completions, kept in localStorage, optionally grounded in a vector store's search results.

import { ApiError, api, events } from "./api.js";
import { $, el, fillSelect } from "./ui.js";

const STORAGE = "lamina.playground.chat";
const state = load();
let running = null; // the AbortController of the request in flight

function load() {
  try {
    const saved = JSON.parse(localStorage.getItem(STORAGE));
    if (saved && Array.isArray(saved.messages)) {
      // An answer still streaming when the page went away never got its end: say so.
      for (const m of saved.messages) {
        if (m.role === "assistant" && !m.stats && !m.notice) m.notice = { kind: "stopped", text: "Interrupted by a reload." };
      }
      return { messages: saved.messages, settings: saved.settings || {} };
    }
  } catch {
    // a broken entry starts a new conversation
  }
  return { messages: [], settings: {} };
}

function save() {
  localStorage.setItem(STORAGE, JSON.stringify(state));
}

function readSettings() {
  const form = $("chat-settings");
  state.settings = {
    model: form.model.value,
    system: form.system.value,
    temperature: form.temperature.value,
    max_tokens: form.max_tokens.value,
    use_docs: form.use_docs.checked,
    store: form.store.value,
    top_k: form.top_k.value,
  };
  save();
  return state.settings;
}

function restoreSettings() {
  const form = $("chat-settings");
  const s = state.settings;
  for (const name of ["system", "temperature", "max_tokens", "top_k"]) if (s[name] !== undefined) form[name].value = s[name];
  form.use_docs.checked = Boolean(s.use_docs);
}

export async function loadModels() {
  const select = $("chat-model");
  const models = (await api("models")).data.filter((m) => m.model_type !== "embedding");
  fillSelect(select, models.map((m) => [m.id, m.id]), state.settings.model || select.value);
}

export function setStores(stores) {
  const options = stores.length ? stores.map((s) => [s.id, s.name || s.id]) : [["", "none yet (Documents tab)"]];
  fillSelect($("chat-store"), options, state.settings.store || $("chat-store").value);
}

function formatStats(stats) {
  if (!stats) return "";
  const parts = [];
  if (stats.ttft_ms !== null) parts.push(`first token ${Math.round(stats.ttft_ms)} ms`);
  if (stats.tokens_per_second !== null) parts.push(`${stats.tokens_per_second.toFixed(1)} tokens/s`);
  parts.push(`${stats.tokens} tokens`);
  return parts.join(" · ");
}

function openSource(source) {
  $("source-title").textContent = `[${source.n}] ${source.filename || source.file_id}`;
  $("source-meta").textContent = `score ${source.score.toFixed(3)} · file ${source.file_id}`;
  $("source-text").textContent = source.text;
  $("source-dialog").showModal();
}

function renderMessage(message) {
  const who = message.role === "user" ? "You" : `Assistant${message.model ? ` · ${message.model}` : ""}`;
  const item = el(
    "li",
    { class: `message ${message.role}` },
    el("div", { class: "who" }, who),
    el("div", { class: "content" }, message.content),
  );
  if (message.sources?.length) {
    item.append(
      el(
        "div",
        { class: "citations" },
        "Sources: ",
        message.sources.map((source) =>
          el(
            "button",
            {
              type: "button",
              class: "citation",
              "aria-label": `Open source ${source.n}: ${source.filename || source.file_id}`,
              onclick: () => openSource(source),
            },
            `[${source.n}] ${source.filename || source.file_id}`,
          ),
        ),
      ),
    );
  }
  if (message.notice) item.append(el("div", { class: `notice ${message.notice.kind}`, role: "note" }, message.notice.text));
  if (message.stats) item.append(el("div", { class: "stats" }, formatStats(message.stats)));
  return item;
}

function render() {
  $("chat-log").replaceChildren(...state.messages.map(renderMessage));
  scrollDown();
}

function scrollDown() {
  const log = $("chat-log");
  log.scrollTop = log.scrollHeight;
}

function sourcesPrompt(sources) {
  const blocks = sources.map((s) => `[${s.n}] ${s.filename || s.file_id}\n${s.text}`);
  return `Answer from the sources below and cite them by number, like [1].\n\n${blocks.join("\n\n")}`;
}

function history() {
  return state.messages
    .filter((m) => m.content && !(m.notice && m.notice.kind === "error"))
    .map((m) => ({ role: m.role, content: m.content }));
}

async function send(text) {
  const settings = readSettings();
  if (!settings.model) throw new ApiError(0, { message: "no chat model is available" });
  const earlier = history();
  state.messages.push({ role: "user", content: text });
  const answer = { role: "assistant", content: "", model: settings.model };
  state.messages.push(answer);
  save();
  render();
  const node = $("chat-log").lastElementChild;
  const content = node.querySelector(".content");
  node.classList.add("streaming");
  running = new AbortController();
  $("chat-send").disabled = true;
  $("chat-stop").disabled = false;
  $("chat-stats").textContent = "Waiting for the first token…";
  const started = performance.now();
  let firstAt = null;
  let pieces = 0;
  let usage = null;
  let finish = null;
  try {
    let system = settings.system.trim();
    if (settings.use_docs && settings.store) {
      const found = await api(`vector_stores/${encodeURIComponent(settings.store)}/search`, {
        method: "POST",
        body: { query: text, max_num_results: Number(settings.top_k) || 3 },
        signal: running.signal,
      });
      answer.sources = found.data.map((r, i) => ({
        n: i + 1,
        file_id: r.file_id,
        filename: r.filename,
        score: r.score,
        text: r.content.map((c) => c.text).join("\n"),
      }));
      if (answer.sources.length) system = [system, sourcesPrompt(answer.sources)].filter(Boolean).join("\n\n");
      else answer.notice = { kind: "info", text: "The search found nothing: answered without documents." };
    } else if (settings.use_docs) {
      answer.notice = { kind: "info", text: "No vector store chosen: answered without documents." };
    }
    const body = {
      model: settings.model,
      messages: [...(system ? [{ role: "system", content: system }] : []), ...earlier, { role: "user", content: text }],
      stream: true,
      stream_options: { include_usage: true },
    };
    if (settings.temperature !== "") body.temperature = Number(settings.temperature);
    if (settings.max_tokens !== "") body.max_tokens = Number(settings.max_tokens);
    const response = await api("chat/completions", { method: "POST", body, signal: running.signal, raw: true });
    for await (const event of events(response)) {
      if (event.error) throw new ApiError(502, event.error); // a failure after the stream began
      if (event.usage) usage = event.usage;
      for (const choice of event.choices || []) {
        if ((choice.index || 0) !== 0) continue;
        const delta = choice.delta?.content;
        if (delta) {
          firstAt ??= performance.now();
          pieces += 1;
          answer.content += delta;
          content.textContent = answer.content;
          scrollDown();
        }
        if (choice.finish_reason) finish = choice.finish_reason;
      }
    }
    if (finish === "content_filter") {
      answer.notice = { kind: "guardrail", text: "A guardrail stopped this answer (finish_reason: content_filter)." };
    } else if (finish === "length") {
      answer.notice = { kind: "info", text: "The answer reached max tokens." };
    }
  } catch (error) {
    if (error.name === "AbortError") answer.notice = { kind: "stopped", text: "Stopped." };
    else if (error.code === "content_policy_violation") answer.notice = { kind: "guardrail", text: error.message };
    else answer.notice = { kind: "error", text: error.message };
  } finally {
    const ended = performance.now();
    const tokens = usage?.completion_tokens ?? pieces;
    const seconds = firstAt === null ? 0 : (ended - firstAt) / 1000;
    answer.stats = {
      ttft_ms: firstAt === null ? null : firstAt - started,
      tokens,
      tokens_per_second: seconds > 0 && tokens > 1 ? (tokens - 1) / seconds : null,
    };
    running = null;
    $("chat-send").disabled = false;
    $("chat-stop").disabled = true;
    $("chat-stats").textContent = formatStats(answer.stats);
    save();
    render();
  }
}

export function initChat() {
  restoreSettings();
  render();
  $("chat-settings").addEventListener("change", readSettings);
  $("chat-settings").addEventListener("submit", (event) => event.preventDefault());
  $("chat-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = $("chat-input");
    const text = input.value.trim();
    if (!text || running) return;
    input.value = "";
    send(text);
  });
  $("chat-input").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("chat-form").requestSubmit();
    }
  });
  $("chat-stop").addEventListener("click", () => running?.abort());
  $("chat-clear").addEventListener("click", () => {
    running?.abort();
    state.messages = [];
    save();
    render();
    $("chat-stats").textContent = "";
  });
}
