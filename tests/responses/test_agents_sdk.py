"""The OpenAI Agents SDK, unmodified, pointed at this server: an agent with a Python function tool and a hosted
FileSearchTool runs to completion over the Responses API."""

from __future__ import annotations

from typing import Any

import pytest
from openai import AsyncOpenAI, OpenAI
from responses_helpers import MODEL
from scripted_upstream import ScriptedUpstream

agents = pytest.importorskip("agents")


@pytest.fixture(scope="module")
def store(base_url: str) -> Any:
    client = OpenAI(base_url=base_url, api_key="unused", max_retries=0)
    store = client.vector_stores.create(name="agent-docs")
    uploaded = client.files.create(
        file=("tides.txt", b"High tide at Saint-Malo is at 06:12 today."), purpose="assistants"
    )
    done = client.vector_stores.files.create_and_poll(vector_store_id=store.id, file_id=uploaded.id)
    assert done.status == "completed", done.last_error
    return store


def model_for(base_url: str) -> Any:
    agents.set_tracing_disabled(True)
    client = AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0)
    return agents.OpenAIResponsesModel(model=MODEL, openai_client=client)


async def test_agent_with_a_function_tool(base_url: str, upstream: ScriptedUpstream) -> None:
    seen: list[str] = []

    @agents.function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        seen.append(city)
        return f"sunny in {city}"

    agent = agents.Agent(name="helper", instructions="use tools", model=model_for(base_url), tools=[get_weather])
    result = await agents.Runner.run(agent, "Paris")
    assert seen == ["Paris"]
    assert result.final_output == "echo: Paris | system: use tools | tools: sunny in Paris"


async def test_agent_with_hosted_file_search(base_url: str, upstream: ScriptedUpstream, store: Any) -> None:
    tool = agents.FileSearchTool(vector_store_ids=[store.id], max_num_results=2, include_search_results=True)
    agent = agents.Agent(name="reader", instructions="cite files", model=model_for(base_url), tools=[tool])
    result = await agents.Runner.run(agent, "high tide Saint-Malo")
    assert "06:12" in result.final_output
    kinds = [item.type for item in result.new_items]
    assert "tool_call_item" in kinds and kinds[-1] == "message_output_item"


async def test_streamed_agent_run(base_url: str, upstream: ScriptedUpstream) -> None:
    @agents.function_tool
    def lookup(term: str) -> str:
        """Look a term up."""
        return f"{term} means hello"

    agent = agents.Agent(name="streamer", instructions="look up", model=model_for(base_url), tools=[lookup])
    run = agents.Runner.run_streamed(agent, "ciao")
    kinds = [event.type async for event in run.stream_events()]
    assert "raw_response_event" in kinds and "run_item_stream_event" in kinds
    assert run.final_output == "echo: ciao | system: look up | tools: ciao means hello"
