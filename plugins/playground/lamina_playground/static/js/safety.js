// Safety: the shields, a box to try text against one, and the configured guardrails.

import { api } from "./api.js";
import { $, el, fillSelect, fillTable, json, showError } from "./ui.js";

export async function loadSafety() {
  const shields = (await api("shields")).data;
  fillSelect($("shield-select"), shields.map((s) => [s.id, s.id]));
  fillTable($("shields-table"), shields, {
    Shield: (s) => s.id,
    Provider: (s) => s.provider_id,
    "Provider's shield": (s) => s.provider_shield_id,
    Params: (s) => (Object.keys(s.params).length ? json(s.params) : ""),
  }, "No shields are configured.");
  const guardrails = await api("inspect/config")
    .then((c) => c.config.apis?.safety?.guardrails || [])
    .catch(() => []);
  fillTable($("guardrails-table"), guardrails.filter((g) => g.shield), {
    Shield: (g) => g.shield,
    "Applies to": (g) => g.apply_to || "both",
    Models: (g) => (g.models ? g.models.join(", ") : "every model"),
    "On bad input": (g) => g.on_input_violation || "error",
  }, "No guardrails are configured.");
}

function showViolation(result, violation) {
  if (!violation) {
    result.replaceChildren(el("p", { class: "ok" }, "No violation: the shield lets this text through."));
    return;
  }
  const findings = violation.metadata?.findings;
  result.replaceChildren(
    el("p", { class: `violation ${violation.violation_level}` }, `Violation (${violation.violation_level}): ${violation.user_message}`),
    violation.categories.length
      ? el("ul", { class: "chips", "aria-label": "Categories" }, violation.categories.map((c) => el("li", {}, c)))
      : null,
    findings ? el("pre", { class: "code" }, json(findings)) : null,
    el("details", {}, el("summary", {}, "Full answer"), el("pre", { class: "code" }, json(violation))),
  );
}

export function initSafety() {
  $("shield-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const result = $("shield-result");
    result.textContent = "Checking…";
    try {
      const answer = await api("safety/run-shield", {
        method: "POST",
        body: { shield_id: $("shield-select").value, messages: [{ role: "user", content: $("shield-text").value }] },
      });
      showViolation(result, answer.violation);
    } catch (error) {
      showError(result, error);
    }
  });
}
