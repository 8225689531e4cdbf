"""The Llama Guard 3 prompt, the call through the inference router, and the parsing of its verdict."""

from __future__ import annotations

import re
from typing import Any

from lamina.apis.inference.types import ChatCompletionRequest, ChatMessage
from lamina.apis.safety.types import Shield, Violation
from lamina.errors import LaminaError, UpstreamError, bad_request

from lamina_safety_llama_guard import LlamaGuardConfig

# The MLCommons AI Safety hazard taxonomy, as Llama Guard 3 was trained on it.
CATEGORIES = {
    "S1": "Violent Crimes",
    "S2": "Non-Violent Crimes",
    "S3": "Sex Crimes",
    "S4": "Child Exploitation",
    "S5": "Defamation",
    "S6": "Specialized Advice",
    "S7": "Privacy",
    "S8": "Intellectual Property",
    "S9": "Indiscriminate Weapons",
    "S10": "Hate",
    "S11": "Self-Harm",
    "S12": "Sexual Content",
    "S13": "Elections",
    "S14": "Code Interpreter Abuse",
}
# Where a hazard corresponds to OpenAI's moderation categories; the rest keep a name of their own.
MODERATION_CATEGORIES = {
    "S1": ["violence", "illicit/violent"],
    "S2": ["illicit"],
    "S3": ["sexual", "illicit"],
    "S4": ["sexual/minors"],
    "S5": ["defamation"],
    "S6": ["specialized_advice"],
    "S7": ["privacy"],
    "S8": ["intellectual_property"],
    "S9": ["illicit/violent"],
    "S10": ["hate"],
    "S11": ["self-harm"],
    "S12": ["sexual"],
    "S13": ["elections"],
    "S14": ["code_interpreter_abuse"],
}
CODE = re.compile(r"^S\d{1,2}$", re.IGNORECASE)
ROLES = {"user": "User", "assistant": "Agent", "tool": "Agent", "function": "Agent"}

PROMPT = """Task: Check if there is unsafe content in '{role}' messages in conversations according our safety \
policy with the below categories.

<BEGIN UNSAFE CONTENT CATEGORIES>
{categories}
<END UNSAFE CONTENT CATEGORIES>

<BEGIN CONVERSATION>

{conversation}

<END CONVERSATION>

Provide your safety assessment for ONLY THE LAST {role} message in the above conversation:
 - First line must read 'safe' or 'unsafe'.
 - If unsafe, a second line must include a comma-separated list of violated categories."""


def build_prompt(messages: list[ChatMessage], excluded: set[str]) -> str:
    turns = [m for m in messages if m.role in ROLES and m.text]
    if not turns:
        raise bad_request("Llama Guard judges user or assistant messages; none has text", param="messages")
    role = ROLES[turns[-1].role]
    categories = "\n".join(f"{code}: {name}." for code, name in CATEGORIES.items() if code not in excluded)
    conversation = "\n\n".join(f"{ROLES[m.role]}: {m.text}" for m in turns)
    return PROMPT.format(role=role, categories=categories, conversation=conversation)


class VerdictError(ValueError):
    """The model answered something that is not a Llama Guard verdict."""


def parse_verdict(answer: str) -> list[str] | None:
    """None when safe, else the violated codes (possibly none named). Raises VerdictError on anything else."""
    lines = [line.strip() for line in answer.strip().splitlines() if line.strip()]
    if not lines:
        raise VerdictError("an empty answer")
    head, _, rest = lines[0].partition(" ")
    first = head.strip(" .:,").lower()
    if first == "safe" and not rest.strip() and len(lines) == 1:
        return None
    if first != "unsafe":
        raise VerdictError(f"an answer that is not a verdict: {answer[:200]!r}")
    codes = []
    for part in re.split(r"[,\s]+", " ".join([rest, *lines[1:]])):
        part = part.strip(" .:;")
        if not part:
            continue
        if not CODE.match(part):
            raise VerdictError(f"an unsafe verdict with a category that is not a code ({part!r}): {answer[:200]!r}")
        codes.append(part.upper())
    return list(dict.fromkeys(codes))


class LlamaGuardProvider:
    moderation_categories = MODERATION_CATEGORIES

    def __init__(self, config: LlamaGuardConfig, provider_id: str, inference: Any) -> None:
        self.config = config
        self.provider_id = provider_id
        self.inference = inference
        self.excluded = {code.upper() for code in config.excluded_categories}

    async def run_shield(self, shield: Shield, messages: list[ChatMessage], params: dict[str, Any]) -> Violation | None:
        excluded = self.excluded | {str(c).upper() for c in params.get("excluded_categories", [])}
        model = params.get("model", self.config.model)
        request = ChatCompletionRequest(
            model=model,
            messages=[ChatMessage(role="user", content=build_prompt(messages, excluded))],
            temperature=0.0,
            max_tokens=self.config.max_tokens,
            stream=False,
        )
        try:
            answer = await self.inference.chat_completion(request, guarded=False)  # a guardrail's own call
            text = answer["choices"][0]["message"]["content"] or ""
        except LaminaError as exc:
            status = exc.status if exc.status in (503, 504) else 502
            raise UpstreamError(
                self.provider_id, f"shield '{shield.id}' could not ask model '{model}': {exc.message}", status=status
            ) from None
        except (KeyError, IndexError, TypeError):
            raise UpstreamError(self.provider_id, f"shield '{shield.id}': model '{model}' sent no answer") from None
        try:
            codes = parse_verdict(text)
        except VerdictError as exc:
            raise UpstreamError(
                self.provider_id, f"shield '{shield.id}': model '{model}' gave {exc}", code="invalid_verdict"
            ) from None
        if codes is None:
            return None
        if codes and all(c in excluded for c in codes):
            return None  # every hazard the model named is one this shield does not check
        codes = [c for c in codes if c not in excluded]
        names = {code: CATEGORIES.get(code, code) for code in codes}
        named = ", ".join(f"{c} {names[c]}" if names[c] != c else c for c in codes) or "unspecified"
        return Violation(
            user_message=f"The message was judged unsafe ({named}).",
            categories=codes,
            category_scores=dict.fromkeys(codes, 1.0),
            metadata={"category_names": names, "verdict": text.strip(), "model": model},
        )
