// Inspect: providers, models, routes and the run config (secrets masked by the server).

import { api } from "./api.js";
import { $, el, fillTable, json, showError } from "./ui.js";

export async function loadInspect() {
  const [providers, models, routes, config] = await Promise.all([
    api("providers"),
    api("models"),
    api("inspect/routes"),
    api("inspect/config").catch((error) => ({ error })),
  ]);
  fillTable($("inspect-providers"), providers.data, {
    Provider: (p) => p.provider_id,
    API: (p) => p.api,
    Type: (p) => p.provider_type,
    Package: (p) => `${p.package} ${p.version}`,
    Config: (p) => el("details", {}, el("summary", {}, "config"), el("pre", { class: "code" }, json(p.config))),
  });
  fillTable($("inspect-models"), models.data, {
    Model: (m) => m.id,
    Type: (m) => m.model_type,
    Provider: (m) => m.provider_id,
    "Provider's model": (m) => m.provider_model_id,
    Source: (m) => m.source,
  });
  fillTable($("inspect-routes"), routes.data, {
    Path: (r) => r.path,
    Methods: (r) => r.methods.join(", "),
    API: (r) => r.api,
  });
  if (config.error) {
    showError($("inspect-config"), config.error);
  } else {
    $("inspect-config-source").textContent = config.source;
    $("inspect-config").textContent = json(config.config);
  }
}
