"""inline::responses — the Responses API's orchestrator: the model-and-tools loop over the inference router's chat
completions, with file search over the vector_io router, and MCP and web search through tool runtime providers."""

from __future__ import annotations

from typing import Any

import lamina
from pydantic import Field


class OrchestratorConfig(lamina.ProviderConfig):
    max_model_calls: int = Field(10, ge=1, description="model calls per response at most (a tool loop's bound)")
    file_search_result_chars: int = Field(
        4000, ge=100, description="characters of each file search result shown to the model"
    )


async def create(config: OrchestratorConfig, deps: lamina.Deps) -> Any:
    from lamina.apis.inference.router import InferenceRouter
    from lamina.apis.vector_io.router import VectorStoresRouter

    from lamina_responses.orchestrator import Orchestrator

    try:
        vector: VectorStoresRouter | None = deps.api(VectorStoresRouter)
    except LookupError:
        vector = None  # no vector_io provider configured: file_search answers 400
    try:
        from lamina.apis.tool_runtime.router import ToolRuntimeRouter

        tool_runtime: ToolRuntimeRouter | None = deps.api(ToolRuntimeRouter)
    except LookupError:
        tool_runtime = None  # no tool_runtime provider configured: the mcp and web_search tools answer 400
    return Orchestrator(config, deps.api(InferenceRouter), vector, tool_runtime)


@lamina.hookimpl
def register_providers() -> list[lamina.ProviderSpec]:
    return [
        lamina.ProviderSpec(
            api="responses",
            type="inline::responses",
            config=OrchestratorConfig,
            create=create,
            # Optional, so a distro whose upstreams are all switched off still starts: the responses API itself
            # needs inference (it is always there, maybe with no models), file_search vector_io, mcp tool_runtime.
            optional_needs=("inference", "vector_io", "tool_runtime"),
            description="The Responses API's loop: chat completions, function tools, file search, MCP, web search",
        )
    ]
