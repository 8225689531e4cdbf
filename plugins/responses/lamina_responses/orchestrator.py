"""The default orchestrator: one response is a loop of chat completions through the inference router (so the
stack's guardrails apply), ending when the model answers in text, asks for a function the client runs, or runs
out of budget. Server-side tools (file search, MCP, web search) run in between, dispatched by `run_tool`.

File search is shown to the model as a function, `file_search(queries)`; its results go back as a tool message
and become a `file_search_call` output item, and the answer cites every file they came from (`file_citation`
annotations at the end of the text). Web search is `web_search(query)` through a tool runtime provider with
`serves_web_search`; its results are numbered for the model, and the answer cites (`url_citation`) each one whose
URL or `[number]` it names.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lamina.apis.conversations.types import Item, new_id
from lamina.apis.inference.types import ChatCompletionRequest
from lamina.apis.responses.provider import Turn
from lamina.apis.responses.types import CreateResponse, FileSearchTool, FunctionTool, HostedTool, NamedTool
from lamina.apis.tool_runtime.types import ToolEndpoint
from lamina.apis.vector_io.types import SearchRequest
from lamina.errors import LaminaError, bad_request

from lamina_responses.truncation import drop_oldest_turn, fit, is_too_long, too_long, window_of

if TYPE_CHECKING:
    from lamina.apis.inference.router import InferenceRouter
    from lamina.apis.tool_runtime.router import ToolRuntimeRouter
    from lamina.apis.vector_io.router import VectorStoresRouter

    from lamina_responses import OrchestratorConfig

FILE_SEARCH = "file_search"
TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})
CITATION_MARK = re.compile(r"\[(\d{1,3})\]")
FILE_SEARCH_FUNCTION = {
    "type": "function",
    "function": {
        "name": FILE_SEARCH,
        "description": "Search the user's uploaded files for passages relevant to the question.",
        "parameters": {
            "type": "object",
            "properties": {"queries": {"type": "array", "items": {"type": "string"}, "description": "search queries"}},
            "required": ["queries"],
        },
    },
}
WEB_SEARCH = "web_search"
WEB_SEARCH_TYPES = frozenset(
    {"web_search", "web_search_preview", "web_search_2025_08_26", "web_search_preview_2025_03_11"}
)
WEB_SEARCH_FUNCTION = {
    "type": "function",
    "function": {
        "name": WEB_SEARCH,
        "description": "Search the web. Cite the sources you use by their URL or their [number].",
        "parameters": {
            "type": "object",
            "properties": {"query": {"type": "string", "description": "what to search the web for"}},
            "required": ["query"],
        },
    },
}


@dataclass
class McpTool:
    """A tool of an MCP server a request's `mcp` tool offers, and where to call it."""

    server: dict[str, Any]  # the request's `mcp` tool: server_label, server_url or connector_id, headers, ...
    name: str
    description: str | None
    parameters: dict[str, Any]
    needs_approval: bool = False


@dataclass
class Tools:
    functions: dict[str, FunctionTool]
    file_search: FileSearchTool | None
    mcp: dict[str, McpTool] = field(default_factory=dict)
    listings: list[dict[str, Any]] = field(default_factory=list)  # mcp_list_tools items, shown first
    web_search: Any = None  # the tool runtime provider that searches, when the request has a web_search tool
    web_sources: bool = False  # include `web_search_call.action.sources`
    approved: set[str] = field(default_factory=set)  # approval request ids the client approved, run this turn

    def awaits_approval(self, call: Call) -> bool:
        tool = self.mcp.get(call.name)
        return tool is not None and tool.needs_approval and call.call_id not in self.approved

    def chat_tools(self) -> list[dict[str, Any]]:
        tools = [
            {"type": "function", "function": f.model_dump(exclude={"type"}, exclude_none=True)}
            for f in self.functions.values()
        ]
        tools += [
            {
                "type": "function",
                "function": {"name": t.name, "description": t.description or "", "parameters": t.parameters},
            }
            for t in self.mcp.values()
        ]
        if self.web_search is not None:
            tools.append(WEB_SEARCH_FUNCTION)
        return [*tools, FILE_SEARCH_FUNCTION] if self.file_search else tools

    def runs_here(self, name: str) -> bool:
        """Whether a call of this tool runs on the server (`run_tool`) rather than in the client."""
        return (
            (name == FILE_SEARCH and self.file_search is not None)
            or (name == WEB_SEARCH and self.web_search is not None)
            or name in self.mcp
        )


@dataclass
class Call:
    """A tool call the model is making, assembled from stream deltas."""

    call_id: str = ""
    name: str = ""
    arguments: str = ""
    item_id: str = ""
    output_index: int = -1  # set once announced to the client (function calls only)


@dataclass
class Message:
    item_id: str
    output_index: int
    text: str = ""


@dataclass
class State:
    output: list[Item] = field(default_factory=list)
    usage: dict[str, int] = field(default_factory=lambda: {"input_tokens": 0, "output_tokens": 0})
    server_calls: int = 0
    model_calls: int = 0
    cited: dict[str, str] = field(default_factory=dict)  # file id -> filename, in order of first retrieval
    sources: list[dict[str, str]] = field(default_factory=list)  # web search results, numbered from 1 as shown


class Orchestrator:
    def __init__(
        self,
        config: OrchestratorConfig,
        inference: InferenceRouter,
        vector: VectorStoresRouter | None,
        tool_runtime: ToolRuntimeRouter | None = None,
    ) -> None:
        self.config = config
        self.inference = inference
        self.vector = vector
        self.tool_runtime = tool_runtime

    async def respond(self, turn: Turn) -> AsyncIterator[dict[str, Any]]:
        tools = await self.check_tools(turn.request)
        messages = to_messages(turn.request.instructions, turn.context)
        if not messages:
            raise bad_request(
                "input: no message for the model (items such as custom_tool_call_output alone have no chat turn)",
                param="input",
            )
        state = State()
        first = _approved_calls(turn, tools)
        if first is None and tools.file_search is not None:
            first = _forced_search(turn)
        if first is None:
            first = await self.call(turn, tools, messages, state, turn.request.tool_choice)
        events = self.loop(turn, tools, messages, state, first)
        return events if turn.stream else _terminal(events)

    async def check_tools(self, request: CreateResponse) -> Tools:
        functions: dict[str, FunctionTool] = {}
        file_search: FileSearchTool | None = None
        servers: list[tuple[int, dict[str, Any]]] = []
        searcher: Any = None
        for index, tool in enumerate(request.tools):
            if isinstance(tool, HostedTool) and tool.type == "mcp" and self.tool_runtime is not None:
                servers.append((index, _mcp_server(index, tool.model_dump())))
                continue
            if isinstance(tool, HostedTool) and tool.type in WEB_SEARCH_TYPES:
                if searcher is not None:
                    raise bad_request("give one web_search tool", param=f"tools.{index}")
                searcher = self.web_searcher()
                if searcher is None:
                    raise bad_request(
                        f"tools.{index}: web_search needs a web search tool runtime provider, and none is "
                        "configured; install one (e.g. lamina-tool-websearch, remote::web-search over SearXNG) "
                        "under providers.tool_runtime",
                        param=f"tools.{index}.type",
                        code="unsupported_tool",
                    )
                if any(name == WEB_SEARCH for name in (getattr(t, "name", None) for t in request.tools)):
                    raise bad_request(f"tools.{index}: a function is named '{WEB_SEARCH}' too", param=f"tools.{index}")
                continue
            if isinstance(tool, HostedTool):
                raise bad_request(
                    f"tools.{index}: tool type '{tool.type}' needs a tool runtime, and none is installed; "
                    "this server runs `function` and `file_search` tools (and `mcp`, `web_search` with a tool "
                    "runtime provider for them)",
                    param=f"tools.{index}.type",
                    code="unsupported_tool",
                )
            if isinstance(tool, FunctionTool):
                if tool.name in functions or (
                    tool.name == FILE_SEARCH and any(isinstance(t, FileSearchTool) for t in request.tools)
                ):
                    raise bad_request(f"tools.{index}.name: '{tool.name}' is named twice", param=f"tools.{index}.name")
                functions[tool.name] = tool
            elif file_search is not None:
                raise bad_request("give one file_search tool (with several vector_store_ids)", param=f"tools.{index}")
            else:
                if self.vector is None:
                    raise bad_request(
                        f"tools.{index}: file_search needs vector stores, and no vector_io provider is configured",
                        param=f"tools.{index}.type",
                        code="unsupported_tool",
                    )
                for store_id in tool.vector_store_ids:
                    try:
                        await self.vector.store_view(store_id)
                    except LaminaError as exc:
                        exc.param = f"tools.{index}.vector_store_ids"
                        raise
                file_search = tool
        mcp: dict[str, McpTool] = {}
        listings: list[dict[str, Any]] = []
        for index, server in servers:
            assert self.tool_runtime is not None
            allowed = server.get("allowed_tools")
            if isinstance(allowed, dict):
                allowed = allowed.get("tool_names")
            defs = await self.tool_runtime.list_mcp_tools(
                server_url=server.get("server_url"),
                connector_id=server.get("connector_id"),
                headers=server.get("headers"),
                authorization=server.get("authorization"),
                allowed_tools=allowed,
            )
            shown = []
            for tool_def in defs:
                taken = tool_def.name == FILE_SEARCH or (tool_def.name == WEB_SEARCH and searcher is not None)
                if tool_def.name in functions or tool_def.name in mcp or taken:
                    raise bad_request(
                        f"tools.{index}: MCP tool '{tool_def.name}' of '{server['server_label']}' has the name of "
                        "another tool; narrow `allowed_tools`",
                        param=f"tools.{index}.allowed_tools",
                    )
                schema = tool_def.input_schema or {"type": "object", "properties": {}}
                approval = _needs_approval(server.get("require_approval", "always"), tool_def.name)
                mcp[tool_def.name] = McpTool(server, tool_def.name, tool_def.description, schema, approval)
                listed = {"name": tool_def.name, "input_schema": schema}
                if tool_def.description:
                    listed["description"] = tool_def.description
                shown.append(listed)
            listings.append(
                {"id": new_id("mcpl"), "type": "mcp_list_tools", "server_label": server["server_label"], "tools": shown}
            )
        choice = request.tool_choice
        if isinstance(choice, NamedTool):
            known = choice.type == "function" and choice.name in functions
            known = known or (choice.type == "file_search" and file_search is not None)
            known = known or (choice.type in WEB_SEARCH_TYPES and searcher is not None)
            if not known:
                raise bad_request(
                    f"tool_choice names {choice.type} {choice.name or ''} which is not among `tools`".replace(
                        "  ", " "
                    ),
                    param="tool_choice",
                )
        sources = "web_search_call.action.sources" in request.include
        return Tools(functions, file_search, mcp, listings, web_search=searcher, web_sources=sources)

    def web_searcher(self) -> Any:
        """The first tool runtime provider that searches the web (`serves_web_search`), or None."""
        providers = self.tool_runtime.providers.values() if self.tool_runtime is not None else ()
        return next((p for p in providers if getattr(p, "serves_web_search", False)), None)

    async def call(
        self,
        turn: Turn,
        tools: Tools,
        messages: list[dict[str, Any]],
        state: State,
        choice: str | NamedTool,
    ) -> dict[str, Any] | AsyncIterator[dict[str, Any]]:
        request = turn.request
        body: dict[str, Any] = {"model": request.model, "messages": messages, "stream": turn.stream}
        if turn.stream:
            body["stream_options"] = {"include_usage": True}
        chat_tools = tools.chat_tools()
        if chat_tools and choice != "none":
            body["tools"] = chat_tools
            body["tool_choice"] = _chat_tool_choice(choice)
            body["parallel_tool_calls"] = request.parallel_tool_calls
        for name in ("temperature", "top_p", "user"):
            if (value := getattr(request, name)) is not None:
                body[name] = value
        if request.max_output_tokens is not None:
            body["max_completion_tokens"] = max(1, request.max_output_tokens - state.usage["output_tokens"])
        if (response_format := request.format.response_format()) is not None:
            body["response_format"] = response_format
        head = 1 if request.instructions else 0  # the instructions' message: never truncated
        auto = request.truncation == "auto"
        window = await self.context_window(request.model)
        if window is not None:
            reserve = body.get("max_completion_tokens") or 0
            fit(messages, head, model=request.model, window=window, reserve=reserve, tools=body.get("tools"), auto=auto)
        state.model_calls += 1
        while True:
            try:
                return await self.inference.chat_completion(ChatCompletionRequest.model_validate(body, strict=False))
            except LaminaError as exc:
                if not is_too_long(exc):
                    raise
                # The model's own verdict: drop the oldest turn and ask again (`messages` is the body's list).
                if not (auto and drop_oldest_turn(messages, head)):
                    shown = "" if auto else '; send "truncation": "auto" to drop the oldest turns'
                    raise too_long(f"{exc.message}{shown}") from None

    async def context_window(self, model: str) -> int | None:
        try:
            return window_of((await self.inference.get_model(model)).metadata)
        except LaminaError:
            return None  # a model its provider could not list: its upstream judges the name, and the length

    async def loop(
        self,
        turn: Turn,
        tools: Tools,
        messages: list[dict[str, Any]],
        state: State,
        result: dict[str, Any] | AsyncIterator[dict[str, Any]],
    ) -> AsyncIterator[dict[str, Any]]:
        request = turn.request
        include_results = "file_search_call.results" in request.include
        incomplete: str | None = None
        for listing in tools.listings:
            index = len(state.output)
            state.output.append(listing)
            at = {"item_id": listing["id"], "output_index": index}
            yield {"type": "response.output_item.added", "output_index": index, "item": {**listing, "tools": []}}
            yield {"type": "response.mcp_list_tools.in_progress", **at}
            yield {"type": "response.mcp_list_tools.completed", **at}
            yield {"type": "response.output_item.done", "output_index": index, "item": listing}
        while True:
            message: Message | None = None
            calls: dict[int, Call] = {}
            finish: str | None = None
            async with aclosing(_chunks(result)) as chunks:
                async for chunk in chunks:
                    _add_usage(state, chunk.get("usage"))
                    for choice in chunk.get("choices") or []:
                        if choice.get("index", 0) != 0:
                            continue
                        delta = choice.get("delta") or {}
                        if text := delta.get("content"):
                            if message is None:
                                message = Message(new_id("msg"), len(state.output))
                                state.output.append({})  # its place; filled when it is done
                                for event in _open_message(message):
                                    yield event
                            message.text += text
                            yield _text_event("response.output_text.delta", message, delta=text, logprobs=[])
                        for part in delta.get("tool_calls") or []:
                            call = calls.setdefault(part.get("index", 0), Call())
                            function = part.get("function") or {}
                            call.call_id = call.call_id or part.get("id") or ""
                            call.name += function.get("name") or ""
                            arguments = function.get("arguments") or ""
                            call.arguments += arguments
                            if call.output_index < 0 and call.name and not tools.runs_here(call.name):
                                if message is not None:
                                    for event in self._close_message(message, state):
                                        yield event
                                    message = None
                                for event in _announce(call, state):
                                    yield event
                            elif call.output_index >= 0 and arguments:
                                yield {
                                    "type": "response.function_call_arguments.delta",
                                    "item_id": call.item_id,
                                    "output_index": call.output_index,
                                    "delta": arguments,
                                }
                        finish = choice.get("finish_reason") or finish
            if message is not None:
                for event in self._close_message(message, state):
                    yield event
            client_calls = [c for c in calls.values() if not tools.runs_here(c.name)]
            server_calls = [c for c in calls.values() if tools.runs_here(c.name)]
            for call in client_calls:
                if call.output_index < 0:
                    for event in _announce(call, state):
                        yield event
                for event in _finish_call(call, state):
                    yield event
            waiting = [c for c in server_calls if tools.awaits_approval(c)]
            if waiting and not client_calls:
                for call in waiting:  # the client approves (or not) in its next request; the response ends here
                    index = len(state.output)
                    item = {
                        "id": new_id("mcpr"),
                        "type": "mcp_approval_request",
                        "server_label": tools.mcp[call.name].server["server_label"],
                        "name": call.name,
                        "arguments": call.arguments,
                    }
                    state.output.append(item)
                    yield {"type": "response.output_item.added", "output_index": index, "item": item}
                    yield {"type": "response.output_item.done", "output_index": index, "item": item}
                break
            if finish == "length":
                incomplete = "max_output_tokens"
                break
            if finish == "content_filter":
                incomplete = "content_filter"
                break
            if client_calls or not server_calls:
                break
            if request.max_tool_calls is not None and state.server_calls + len(server_calls) > request.max_tool_calls:
                incomplete = "max_tool_calls"
                break
            if state.model_calls >= self.config.max_model_calls:
                incomplete = "max_model_calls"
                break
            assistant: dict[str, Any] = {"role": "assistant", "content": None, "tool_calls": []}
            messages.append(assistant)
            for call in server_calls:
                call.call_id = call.call_id or new_id("call")
                assistant["tool_calls"].append(
                    {
                        "id": call.call_id,
                        "type": "function",
                        "function": {"name": call.name, "arguments": call.arguments},
                    }
                )
                events: list[dict[str, Any]] = []
                content = await self.run_tool(call, tools, state, include_results, events)
                for event in events:
                    yield event
                messages.append({"role": "tool", "tool_call_id": call.call_id, "content": content})
            state.server_calls += len(server_calls)
            # After a forced tool call, let the model answer: forcing again would loop forever.
            result = await self.call(turn, tools, messages, state, "auto")
        usage = {
            "input_tokens": state.usage["input_tokens"],
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": state.usage["output_tokens"],
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": state.usage["input_tokens"] + state.usage["output_tokens"],
        }
        final = {**turn.response, "output": state.output, "usage": usage}
        if incomplete is not None:
            final.update(status="incomplete", incomplete_details={"reason": incomplete})
            yield {"type": "response.incomplete", "response": final}
        else:
            final.update(status="completed", completed_at=int(time.time()))
            yield {"type": "response.completed", "response": final}

    async def run_tool(
        self, call: Call, tools: Tools, state: State, include_results: bool, events: list[dict[str, Any]]
    ) -> str:
        """Run one server-side tool call; its output items' events go to `events`; returns what the model reads.

        The one place server-side tools are dispatched: a tool runtime (MCP, web search) plugs in here."""
        if call.name == FILE_SEARCH and tools.file_search is not None:
            return await self.file_search(call, tools.file_search, state, include_results, events)
        if call.name in tools.mcp:
            return await self.mcp_call(call, tools.mcp[call.name], state, events, call.call_id in tools.approved)
        if call.name == WEB_SEARCH and tools.web_search is not None:
            return await self.web_search(call, tools, state, events)
        raise bad_request(f"the model called tool '{call.name}', which this server cannot run", param="tools")

    async def file_search(
        self, call: Call, tool: FileSearchTool, state: State, include_results: bool, events: list[dict[str, Any]]
    ) -> str:
        assert self.vector is not None  # check_tools refused file_search without vector_io
        try:
            queries = json.loads(call.arguments or "{}").get("queries") or []
        except (json.JSONDecodeError, AttributeError):
            queries = []
        queries = [q for q in (queries if isinstance(queries, list) else [queries]) if isinstance(q, str) and q.strip()]
        item_id, index = new_id("fs"), len(state.output)
        item: dict[str, Any] = {
            "id": item_id,
            "type": "file_search_call",
            "status": "in_progress",
            "queries": queries,
            "results": None,
        }
        state.output.append(item)
        events.append({"type": "response.output_item.added", "output_index": index, "item": {**item}})
        for step in ("in_progress", "searching"):
            events.append({"type": f"response.file_search_call.{step}", "item_id": item_id, "output_index": index})
        results: list[dict[str, Any]] = []
        if queries:
            search = SearchRequest(
                query=queries,
                max_num_results=tool.max_num_results or 10,
                filters=tool.filters,
                ranking_options=tool.ranking_options,
            )
            for store_id in tool.vector_store_ids:
                page = await self.vector.search(store_id, search)
                for hit in page["data"]:
                    text = "".join(part.get("text", "") for part in hit.get("content") or [])
                    results.append(
                        {
                            "file_id": hit["file_id"],
                            "filename": hit["filename"],
                            "score": hit["score"],
                            "text": text,
                            "attributes": hit.get("attributes") or {},
                        }
                    )
            results = sorted(results, key=lambda r: -r["score"])[: search.max_num_results]
        for result in results:
            if result["file_id"]:
                state.cited.setdefault(result["file_id"], result["filename"])
        item.update(status="completed", results=results if include_results else None)
        events.append({"type": "response.file_search_call.completed", "item_id": item_id, "output_index": index})
        events.append({"type": "response.output_item.done", "output_index": index, "item": {**item}})
        if not queries:
            return "No search was run: give `queries`, a list of search strings."
        if not results:
            return f"File search for {'; '.join(queries)}: nothing found."
        limit = self.config.file_search_result_chars
        shown = [
            f"[{i}] file_id={r['file_id']} filename={r['filename']} score={r['score']:.3f}\n{r['text'][:limit]}"
            for i, r in enumerate(results, start=1)
        ]
        return f"File search results for {'; '.join(queries)}:\n\n" + "\n\n".join(shown)

    async def mcp_call(
        self, call: Call, tool: McpTool, state: State, events: list[dict[str, Any]], approved: bool = False
    ) -> str:
        assert self.tool_runtime is not None  # check_tools offered MCP tools only with a tool runtime
        server = tool.server
        item_id, index = new_id("mcp"), len(state.output)
        item: dict[str, Any] = {
            "id": item_id,
            "type": "mcp_call",
            "server_label": server["server_label"],
            "name": call.name,
            "arguments": call.arguments,
            "status": "in_progress",
        }
        if approved:
            item["approval_request_id"] = call.call_id
        state.output.append(item)
        at = {"item_id": item_id, "output_index": index}
        events.append({"type": "response.output_item.added", "output_index": index, "item": {**item, "arguments": ""}})
        events.append({"type": "response.mcp_call_arguments.delta", **at, "delta": call.arguments})
        events.append({"type": "response.mcp_call_arguments.done", **at, "arguments": call.arguments})
        events.append({"type": "response.mcp_call.in_progress", **at})
        try:
            arguments = json.loads(call.arguments or "{}")
        except json.JSONDecodeError:
            arguments = None
        if not isinstance(arguments, dict):
            output, error = None, f"the arguments are not a JSON object: {call.arguments[:200]}"
        else:
            result = await self.tool_runtime.call_mcp_tool(
                call.name,
                arguments,
                server_url=server.get("server_url"),
                connector_id=server.get("connector_id"),
                headers=server.get("headers"),
                authorization=server.get("authorization"),
            )
            output, error = result.output, result.error
        if error is None:
            item.update(status="completed", output=output or "")
        else:
            text = [{"type": "text", "text": error}]
            item.update(status="failed", error={"type": "mcp_tool_execution_error", "content": text})
        events.append({"type": f"response.mcp_call.{'completed' if error is None else 'failed'}", **at})
        events.append({"type": "response.output_item.done", "output_index": index, "item": {**item}})
        return output or "" if error is None else f"The tool failed: {error}"

    async def web_search(self, call: Call, tools: Tools, state: State, events: list[dict[str, Any]]) -> str:
        """A `web_search_call` item through the web search provider; a search that fails is an item with status
        `failed` (the model reads why), never a failed response."""
        try:
            query = json.loads(call.arguments or "{}").get("query")
        except (json.JSONDecodeError, AttributeError):
            query = None
        query = query.strip() if isinstance(query, str) else ""
        item_id, index = new_id("ws"), len(state.output)
        action: dict[str, Any] = {"type": "search", "query": query}
        item: dict[str, Any] = {"id": item_id, "type": "web_search_call", "status": "in_progress", "action": action}
        state.output.append(item)
        at = {"item_id": item_id, "output_index": index}
        events.append({"type": "response.output_item.added", "output_index": index, "item": {**item}})
        events.append({"type": "response.web_search_call.in_progress", **at})
        events.append({"type": "response.web_search_call.searching", **at})
        results: list[dict[str, Any]] = []
        error = None if query else "the call gave no `query`"
        if query:
            try:
                found = await tools.web_search.invoke_tool(ToolEndpoint(), WEB_SEARCH, {"query": query})
            except LaminaError as exc:
                error = exc.message
            else:
                error = found.error_message
                hits = (found.metadata or {}).get("results") or []
                results = [r for r in hits if isinstance(r, dict) and isinstance(r.get("url"), str)]
        first = len(state.sources) + 1
        if error is None:
            state.sources.extend(results)
            if tools.web_sources:
                action["sources"] = [{"type": "url", "url": r["url"]} for r in results]
            item["status"] = "completed"
            events.append({"type": "response.web_search_call.completed", **at})
        else:
            item["status"] = "failed"
        events.append({"type": "response.output_item.done", "output_index": index, "item": {**item}})
        if error is not None:
            return f"The web search failed: {error}"
        if not results:
            return f"Web search for {query}: nothing found."
        shown = [
            f"[{n}] {r.get('title') or r['url']}\n{r['url']}\n{r.get('snippet') or ''}"
            for n, r in enumerate(results, start=first)
        ]
        return f"Web search results for {query}:\n\n" + "\n\n".join(shown)

    def _close_message(self, message: Message, state: State) -> list[dict[str, Any]]:
        annotations = [
            {"type": "file_citation", "file_id": file_id, "filename": filename, "index": len(message.text)}
            for file_id, filename in state.cited.items()
        ]
        annotations += url_citations(message.text, state.sources)
        part = {"type": "output_text", "text": message.text, "annotations": annotations, "logprobs": []}
        item = {
            "id": message.item_id,
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [part],
        }
        state.output[message.output_index] = item
        events = [
            _text_event("response.output_text.annotation.added", message, annotation=annotation, annotation_index=i)
            for i, annotation in enumerate(annotations)
        ]
        events.append(_text_event("response.output_text.done", message, text=message.text, logprobs=[]))
        events.append(_text_event("response.content_part.done", message, part=part))
        events.append({"type": "response.output_item.done", "output_index": message.output_index, "item": item})
        return events


def url_citations(text: str, sources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`url_citation`s for the web search results the answer uses: where it names a result's URL, or its
    `[number]` as the results were shown to the model."""
    spans: dict[tuple[int, int], dict[str, Any]] = {}
    for match in CITATION_MARK.finditer(text):
        number = int(match.group(1))
        if 1 <= number <= len(sources):
            spans[match.span()] = sources[number - 1]
    for source in sources:
        start = text.find(source["url"])
        while start >= 0:
            end = start + len(source["url"])
            spans.setdefault((start, end), source)
            start = text.find(source["url"], end)
    return [
        {
            "type": "url_citation",
            "url": source["url"],
            "title": source.get("title") or source["url"],
            "start_index": start,
            "end_index": end,
        }
        for (start, end), source in sorted(spans.items())
    ]


def _open_message(message: Message) -> list[dict[str, Any]]:
    item = {"id": message.item_id, "type": "message", "role": "assistant", "status": "in_progress", "content": []}
    part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
    return [
        {"type": "response.output_item.added", "output_index": message.output_index, "item": item},
        _text_event("response.content_part.added", message, part=part),
    ]


def _text_event(kind: str, message: Message, **fields: Any) -> dict[str, Any]:
    return {
        "type": kind,
        "item_id": message.item_id,
        "output_index": message.output_index,
        "content_index": 0,
        **fields,
    }


def _call_item(call: Call, status: str, arguments: str) -> dict[str, Any]:
    return {
        "id": call.item_id,
        "type": "function_call",
        "status": status,
        "call_id": call.call_id,
        "name": call.name,
        "arguments": arguments,
    }


def _announce(call: Call, state: State) -> list[dict[str, Any]]:
    call.call_id = call.call_id or new_id("call")
    call.item_id, call.output_index = new_id("fc"), len(state.output)
    state.output.append({})
    events = [
        {
            "type": "response.output_item.added",
            "output_index": call.output_index,
            "item": _call_item(call, "in_progress", ""),
        }
    ]
    if call.arguments:
        events.append(
            {
                "type": "response.function_call_arguments.delta",
                "item_id": call.item_id,
                "output_index": call.output_index,
                "delta": call.arguments,
            }
        )
    return events


def _finish_call(call: Call, state: State) -> list[dict[str, Any]]:
    item = _call_item(call, "completed", call.arguments)
    state.output[call.output_index] = item
    return [
        {
            "type": "response.function_call_arguments.done",
            "item_id": call.item_id,
            "output_index": call.output_index,
            "arguments": call.arguments,
        },
        {"type": "response.output_item.done", "output_index": call.output_index, "item": item},
    ]


async def _terminal(events: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    """The terminal event alone, for a response returned whole: its router wants nothing else, and every event
    costs a trip through each wrapper between here and it."""
    async with aclosing(events):  # type: ignore[type-var]
        async for event in events:
            if event["type"] in TERMINAL:
                yield event


def _add_usage(state: State, usage: Any) -> None:
    if isinstance(usage, dict):
        state.usage["input_tokens"] += int(usage.get("prompt_tokens") or 0)
        state.usage["output_tokens"] += int(usage.get("completion_tokens") or 0)


async def _chunks(result: dict[str, Any] | AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    """A chat completion as stream chunks, so one loop handles both."""
    if not isinstance(result, dict):
        async with aclosing(result):  # type: ignore[type-var]
            async for chunk in result:
                yield chunk
        return
    choices = []
    for choice in result.get("choices") or []:
        reply = choice.get("message") or {}
        calls = [{"index": i, **call} for i, call in enumerate(reply.get("tool_calls") or [])]
        delta = {"content": reply.get("content"), "tool_calls": calls}
        choices.append({"index": choice.get("index", 0), "delta": delta, "finish_reason": choice.get("finish_reason")})
    yield {"choices": choices, "usage": result.get("usage")}


def _mcp_server(index: int, tool: dict[str, Any]) -> dict[str, Any]:
    """A request's `mcp` tool, checked: a 400 naming the field for what this server cannot do."""
    if not isinstance(tool.get("server_label"), str) or not tool["server_label"]:
        raise bad_request(
            f"tools.{index}.server_label: an mcp tool needs a `server_label`", param=f"tools.{index}.server_label"
        )
    if (tool.get("server_url") is None) == (tool.get("connector_id") is None):
        raise bad_request(
            f"tools.{index}: give exactly one of `server_url` and `connector_id`", param=f"tools.{index}.server_url"
        )
    approval = tool.get("require_approval", "always")
    if not (approval in ("always", "never") or isinstance(approval, dict)):
        raise bad_request(
            f"tools.{index}.require_approval: 'always', 'never' or {{always: {{tool_names}}, never: {{tool_names}}}}",
            param=f"tools.{index}.require_approval",
        )
    headers = tool.get("headers")
    if headers is not None and not (isinstance(headers, dict) and all(isinstance(v, str) for v in headers.values())):
        raise bad_request(f"tools.{index}.headers: must map names to strings", param=f"tools.{index}.headers")
    return tool


def _needs_approval(approval: Any, name: str) -> bool:
    if approval == "never":
        return False
    if isinstance(approval, dict):
        never = (approval.get("never") or {}).get("tool_names") or []
        always = (approval.get("always") or {}).get("tool_names") or []
        return name in always or name not in never
    return True


def _approved_calls(turn: Turn, tools: Tools) -> dict[str, Any] | None:
    """Calls the client approved (`mcp_approval_response` items answering `mcp_approval_request`s) and that have
    not run yet: run first, as if the model had just asked for them again."""
    requests = {i.get("id"): i for i in turn.context if i.get("type") == "mcp_approval_request"}
    ran = {i.get("approval_request_id") for i in turn.context if i.get("type") == "mcp_call"}
    calls = []
    for item in turn.context:
        request_id = item.get("approval_request_id")
        if item.get("type") != "mcp_approval_response" or not item.get("approve") or request_id in ran:
            continue
        request = requests.get(request_id)
        if request is None or request.get("name") not in tools.mcp:
            continue
        tools.approved.add(request_id)
        function = {"name": request["name"], "arguments": request.get("arguments") or "{}"}
        calls.append({"id": request_id, "type": "function", "function": function})
    if not calls:
        return None
    message = {"role": "assistant", "content": None, "tool_calls": calls}
    return {"choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}], "usage": None}


def _forced_search(turn: Turn) -> dict[str, Any] | None:
    """With `tool_choice` naming file_search the search is certain, and its query is the user's last message:
    run it without asking the model first (a call saved, and small models that ignore a forced tool still
    search)."""
    choice = turn.request.tool_choice
    if not (isinstance(choice, NamedTool) and choice.type == FILE_SEARCH):
        return None
    users = [item for item in turn.context if item.get("type") == "message" and item.get("role") == "user"]
    query = _text_of(users[-1].get("content")).strip() if users else ""
    if not query:
        return None
    arguments = json.dumps({"queries": [query]})
    call = {"id": new_id("call"), "type": "function", "function": {"name": FILE_SEARCH, "arguments": arguments}}
    message = {"role": "assistant", "content": None, "tool_calls": [call]}
    return {"choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}], "usage": None}


def _chat_tool_choice(choice: str | NamedTool) -> Any:
    if isinstance(choice, str):
        return choice
    name = choice.name if choice.type == "function" else FILE_SEARCH if choice.type == FILE_SEARCH else WEB_SEARCH
    return {"type": "function", "function": {"name": name}}


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(part.get("text") or part.get("refusal") or "" for part in content or () if isinstance(part, dict))


def _user_content(content: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    if all(part.get("type") in ("input_text", "output_text", "text") for part in content):
        return _text_of(content)
    parts: list[dict[str, Any]] = []
    for part in content:
        kind = part.get("type")
        if kind in ("input_text", "output_text", "text"):
            parts.append({"type": "text", "text": part.get("text") or ""})
        elif kind == "input_image" and part.get("image_url"):
            parts.append(
                {"type": "image_url", "image_url": {"url": part["image_url"], "detail": part.get("detail", "auto")}}
            )
        elif kind == "input_file":
            parts.append({"type": "text", "text": f"[file {part.get('filename') or part.get('file_id') or ''}]"})
    return parts


def to_messages(instructions: str | None, items: list[Item]) -> list[dict[str, Any]]:
    """Responses items as chat messages: function calls join the assistant message before them."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": instructions}] if instructions else []
    for item in items:
        kind = item.get("type")
        last = messages[-1] if messages else None
        if kind == "message":
            role, content = item.get("role"), item.get("content")
            if role == "assistant":
                messages.append({"role": "assistant", "content": _text_of(content)})
            else:
                messages.append(
                    {"role": role, "content": content if isinstance(content, str) else _user_content(content or [])}
                )
        elif kind in ("function_call", "file_search_call"):
            if (
                last is None
                or last.get("role") != "assistant"
                or (last.get("content") is None and "tool_calls" not in last)
            ):
                last = {"role": "assistant", "content": None}
                messages.append(last)
            if kind == "function_call":
                call = {
                    "id": item["call_id"],
                    "type": "function",
                    "function": {"name": item["name"], "arguments": item["arguments"]},
                }
            else:
                arguments = json.dumps({"queries": item.get("queries") or []})
                call = {"id": item["id"], "type": "function", "function": {"name": FILE_SEARCH, "arguments": arguments}}
            last.setdefault("tool_calls", []).append(call)
            if kind == "file_search_call":
                results = item.get("results")
                shown = (
                    "\n\n".join(
                        f"file_id={r.get('file_id')} filename={r.get('filename')}\n{r.get('text', '')}" for r in results
                    )
                    if results
                    else "(the results of this earlier search were not kept)"
                )
                messages.append({"role": "tool", "tool_call_id": item["id"], "content": shown})
        elif kind == "mcp_call":
            call = {
                "id": item["id"],
                "type": "function",
                "function": {"name": item["name"], "arguments": item["arguments"]},
            }
            messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
            error = item.get("error")
            shown = item.get("output") or (f"The tool failed: {error}" if error else "")
            messages.append({"role": "tool", "tool_call_id": item["id"], "content": shown})
        elif kind == "function_call_output":
            messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": _text_of(item.get("output"))})
    return messages
