"""The prompts router: versions of prompts in the stack's storage, and `render_prompt` for other APIs.

A prompt is a head (`prompt-heads/<id>`: its default and latest version numbers) and its versions
(`prompt-versions/<id>/<version>`, never changed once written). An update writes the new version first and the head
after, so a crash between the two leaves an unreferenced version that the next update overwrites, never a head
naming a missing version. Every read goes through `fetch` (and every listing through `visible`): that is where who
may see a prompt (its `owner`) is checked (`lamina.auth`).
"""

from __future__ import annotations

from pydantic import ValidationError

from lamina import auth
from lamina.apis.prompts.types import (
    PLACEHOLDER,
    CreatePrompt,
    Prompt,
    PromptHead,
    PromptList,
    PromptVersion,
    UpdatePrompt,
    new_prompt_id,
)
from lamina.errors import bad_request, conflict, not_found, validation_error
from lamina.storage import KVStore, Registry


class PromptsRouter:
    def __init__(self, kv: KVStore) -> None:
        self.heads = Registry(kv, "prompt-heads/", PromptHead, key=lambda head: head.prompt_id)
        self.versions = Registry(kv, "prompt-versions/", PromptVersion, key=lambda v: f"{v.prompt_id}/{v.version:010d}")

    async def fetch(self, prompt_id: str) -> PromptHead:
        """The one way to a prompt by id: one the caller may not read does not exist for it."""
        head = await self.heads.get(prompt_id)
        if head is None or not auth.can("read", "prompt", prompt_id, head.owner):
            raise not_found(f"prompt '{prompt_id}' not found", param="prompt_id")
        return head

    async def visible(self) -> list[PromptHead]:
        """Every prompt the caller may list."""
        return [head for head in await self.heads.list() if auth.can("read", "prompt", head.prompt_id, head.owner)]

    async def _version(self, head: PromptHead, version: int | None) -> Prompt:
        number = head.default_version if version is None else version
        stored = await self.versions.get(f"{head.prompt_id}/{number:010d}")
        if stored is None or number > head.latest_version:
            raise not_found(f"prompt '{head.prompt_id}' has no version {number}", param="version")
        return _shown(stored, head)

    async def create(self, request: CreatePrompt) -> Prompt:
        prompt_id, owner = new_prompt_id(), auth.owner()
        auth.require("create", "prompt", prompt_id, owner)
        version = PromptVersion(
            prompt_id=prompt_id, prompt=request.prompt, version=1, variables=request.variables or [], owner=owner
        )
        await self.versions.put(version)
        head = await self.heads.put(PromptHead(prompt_id=prompt_id, default_version=1, latest_version=1, owner=owner))
        return _shown(version, head)

    async def create_from(self, *, text: str, variables: list[str] | None = None) -> Prompt:
        """`create` for Python callers: validates like `POST /v1/prompts` (a 400 for an undeclared variable)."""
        try:
            request = CreatePrompt(prompt=text, variables=variables)
        except ValidationError as exc:
            raise validation_error(exc) from None
        return await self.create(request)

    async def list(self) -> PromptList:
        """Every prompt, at its default version."""
        heads = sorted(await self.visible(), key=lambda head: head.prompt_id)
        return PromptList(data=[await self._version(head, None) for head in heads])

    async def get(self, prompt_id: str, version: int | None = None) -> Prompt:
        return await self._version(await self.fetch(prompt_id), version)

    async def versions_of(self, prompt_id: str) -> PromptList:
        head = await self.fetch(prompt_id)
        stored = await self.versions.list(f"{prompt_id}/")
        return PromptList(data=[_shown(v, head) for v in stored if v.version <= head.latest_version])

    async def update(self, prompt_id: str, request: UpdatePrompt) -> Prompt:
        head = await self.fetch(prompt_id)
        auth.require("update", "prompt", prompt_id, head.owner)
        if request.version != head.latest_version:
            raise conflict(
                f"version {request.version} is not the latest version of prompt '{prompt_id}' "
                f"({head.latest_version}); update from the latest",
                param="version",
            )
        version = PromptVersion(
            prompt_id=prompt_id,
            prompt=request.prompt,
            version=head.latest_version + 1,
            variables=request.variables or [],
            owner=head.owner,
        )
        await self.versions.put(version)
        head.latest_version = version.version
        if request.set_as_default:
            head.default_version = version.version
        await self.heads.put(head)
        return _shown(version, head)

    async def set_default(self, prompt_id: str, version: int) -> Prompt:
        head = await self.fetch(prompt_id)
        auth.require("update", "prompt", prompt_id, head.owner)
        shown = await self._version(head, version)
        head.default_version = version
        await self.heads.put(head)
        return shown.model_copy(update={"is_default": True})

    async def delete(self, prompt_id: str) -> None:
        head = await self.fetch(prompt_id)
        auth.require("delete", "prompt", prompt_id, head.owner)
        await self.heads.delete(prompt_id)  # first: once the head is gone no request finds the prompt
        for version in await self.versions.list(f"{head.prompt_id}/"):
            await self.versions.delete(f"{prompt_id}/{version.version:010d}")

    async def render_prompt(
        self, prompt_id: str, version: int | str | None = None, variables: dict[str, str] | None = None
    ) -> str:
        """The text of `prompt_id` (at `version`, default: its default version) with every `{{name}}` replaced by
        `variables[name]`. What the Responses API's `prompt: {id, version, variables}` calls. Raises a 404 for an
        unknown prompt or version, a 400 naming `prompt.variables` for a missing or undeclared variable."""
        if isinstance(version, str):
            if not version.isdigit() or int(version) < 1:
                raise bad_request(f"prompt version '{version}' is not a version number", param="prompt.version")
            version = int(version)
        shown = await self.get(prompt_id, version)
        given = variables or {}
        unknown = sorted(set(given) - set(shown.variables))
        if unknown:
            raise bad_request(
                f"prompt '{prompt_id}' declares no variables {unknown}; it declares {shown.variables}",
                param="prompt.variables",
            )
        missing = sorted({name for name in PLACEHOLDER.findall(shown.prompt or "")} - set(given))
        if missing:
            raise bad_request(f"prompt '{prompt_id}' needs the variables {missing}", param="prompt.variables")
        return PLACEHOLDER.sub(lambda match: str(given[match.group(1)]), shown.prompt or "")


def _shown(version: PromptVersion, head: PromptHead) -> Prompt:
    return Prompt(
        prompt_id=version.prompt_id,
        prompt=version.prompt,
        version=version.version,
        variables=version.variables,
        is_default=version.version == head.default_version,
    )
