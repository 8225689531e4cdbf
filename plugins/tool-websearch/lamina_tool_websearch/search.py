"""The web search provider: one tool, `web_search(query)`, answered by the configured search API.

A result is `{url, title, snippet}`. `invoke_tool` answers with the results as text (what a model reads) and as
`metadata.results` (what the Responses API turns into `web_search_call` sources and `url_citation`s). A search API
that cannot be reached, times out or answers nonsense is a `tool_server_error` naming it (never its key).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp
from lamina.apis.tool_runtime.types import ToolDef, ToolEndpoint, ToolInvocationResult, tool_server_error
from lamina.errors import bad_request

if TYPE_CHECKING:
    from lamina_tool_websearch import WebSearchConfig

log = logging.getLogger("lamina")
TOOL = "web_search"
SCHEMA = {
    "type": "object",
    "properties": {"query": {"type": "string", "description": "what to search the web for"}},
    "required": ["query"],
}


class WebSearch:
    serves_mcp = False
    serves_web_search = True  # the Responses API's `web_search` tool runs through the first such provider

    def __init__(self, config: WebSearchConfig, provider_id: str) -> None:
        self.config = config
        self.provider_id = provider_id
        parts = urlsplit(config.base_url)
        self.shown = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"  # no credentials in errors
        self.session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    async def list_tools(self, endpoint: ToolEndpoint) -> list[ToolDef]:
        return [
            ToolDef(name=TOOL, description="Search the web; returns titles, URLs and snippets.", input_schema=SCHEMA)
        ]

    async def invoke_tool(
        self, endpoint: ToolEndpoint, tool_name: str, arguments: dict[str, Any]
    ) -> ToolInvocationResult:
        if tool_name != TOOL:
            raise bad_request(
                f"provider '{self.provider_id}' has one tool, '{TOOL}', not '{tool_name}'", param="tool_name"
            )
        query = arguments.get("query")
        if not isinstance(query, str) or not query.strip():
            return ToolInvocationResult(error_message="give `query`, the text to search for", error_code=400)
        results = await self.search(query.strip())
        return ToolInvocationResult(content=as_text(query, results), metadata={"query": query, "results": results})

    async def search(self, query: str) -> list[dict[str, str]]:
        if self.session is None:
            self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.config.timeout_seconds))
        url, params, headers = self._request(query)
        server = f"web search '{self.provider_id}' ({self.shown})"
        try:
            async with self.session.get(url, params=params, headers=headers) as response:
                if response.status != 200:
                    hint = " (does its settings.yml allow the json format?)" if response.status == 403 else ""
                    raise tool_server_error(server, f"answered {response.status}{hint}", status=502)
                payload = await response.json(content_type=None)
        except TimeoutError:
            raise tool_server_error(server, f"no answer within {self.config.timeout_seconds:g}s", status=504) from None
        except aiohttp.ClientError as exc:
            raise tool_server_error(server, f"could not be reached ({type(exc).__name__})") from None
        except ValueError:
            raise tool_server_error(server, "answered with something that is not JSON", status=502) from None
        try:
            return self._results(payload)[: self.config.max_results]
        except (KeyError, TypeError, AttributeError):
            raise tool_server_error(server, "answered JSON that is not a search result list", status=502) from None

    def _request(self, query: str) -> tuple[str, dict[str, str], dict[str, str]]:
        base = self.config.base_url.rstrip("/")
        key = self.config.api_key
        if self.config.api == "brave":
            params = {"q": query, "count": str(self.config.max_results)}
            if self.config.language:
                params["search_lang"] = self.config.language
            return f"{base}/res/v1/web/search", params, {"X-Subscription-Token": key} if key else {}
        params = {"q": query, "format": "json"}
        if self.config.language:
            params["language"] = self.config.language
        return f"{base}/search", params, {"Authorization": f"Bearer {key}"} if key else {}

    def _results(self, payload: Any) -> list[dict[str, str]]:
        found = payload["web"]["results"] if self.config.api == "brave" else payload["results"]
        results = []
        for hit in found:
            url = hit.get("url")
            if not isinstance(url, str) or not url.startswith(("http://", "https://")):
                continue
            snippet = hit.get("description" if self.config.api == "brave" else "content") or ""
            results.append({"url": url, "title": str(hit.get("title") or url), "snippet": str(snippet)})
        return results


def as_text(query: str, results: list[dict[str, str]]) -> str:
    if not results:
        return f"Web search for {query}: nothing found."
    shown = [f"[{i}] {r['title']}\n{r['url']}\n{r['snippet']}" for i, r in enumerate(results, start=1)]
    return f"Web search results for {query}:\n\n" + "\n\n".join(shown)
