// Tabs, and loading each tab's data when it is shown.

import { initAgents, loadAgents } from "./agents.js";
import { askForKey } from "./api.js";
import { initChat, loadModels } from "./chat.js";
import { initDocuments, loadStores } from "./documents.js";
import { loadInspect } from "./inspect.js";
import { initSafety, loadSafety } from "./safety.js";
import { $, showError } from "./ui.js";

const loaders = {
  chat: async () => {
    await loadModels();
    await loadStores();
  },
  documents: loadStores,
  agents: loadAgents,
  safety: loadSafety,
  inspect: loadInspect,
};

const tabs = [...document.querySelectorAll('[role="tab"]')];

function panelOf(tab) {
  return $(tab.getAttribute("aria-controls"));
}

async function show(tab) {
  for (const other of tabs) {
    const selected = other === tab;
    other.setAttribute("aria-selected", String(selected));
    panelOf(other).hidden = !selected;
  }
  const name = tab.id.replace("tab-", "");
  history.replaceState(null, "", `#${name}`);
  const panel = panelOf(tab);
  panel.setAttribute("aria-busy", "true");
  try {
    await loaders[name]();
  } catch (error) {
    const banner = panel.querySelector(".load-error") || panel.insertAdjacentElement("afterbegin", document.createElement("p"));
    banner.className = "load-error";
    showError(banner, error);
    return;
  } finally {
    panel.removeAttribute("aria-busy");
  }
  panel.querySelector(".load-error")?.remove();
}

// Every tab is a button (Tab reaches each, Enter/Space selects); arrow keys, Home and End move between them too.
function onTabKey(event) {
  const index = tabs.indexOf(event.currentTarget);
  const moves = { ArrowRight: 1, ArrowLeft: -1, Home: -index, End: tabs.length - 1 - index };
  if (!(event.key in moves)) return;
  event.preventDefault();
  const next = tabs[(index + moves[event.key] + tabs.length) % tabs.length];
  next.focus();
  show(next);
}

initChat();
initDocuments();
initSafety();
initAgents();
for (const tab of tabs) {
  tab.addEventListener("click", () => show(tab));
  tab.addEventListener("keydown", onTabKey);
}
$("inspect-refresh").addEventListener("click", () => show($("tab-inspect")));
$("api-key-button").addEventListener("click", async () => {
  if (await askForKey("Set the key this page sends, or forget it.")) show(tabs.find((t) => t.ariaSelected === "true"));
});
const tabOfHash = () => $(`tab-${location.hash.slice(1)}`);
window.addEventListener("hashchange", () => tabOfHash() && show(tabOfHash())); // links like #documents
show(tabOfHash() || tabs[0]);
