"""Traces reach a real OTLP/HTTP receiver with the right parents and attributes; `/metrics` counts what was sent.

The server runs with the telemetry plugin in front of the scripted fake upstream (tests/e2e/fake_openai.py).
Spans are read after the server stopped: stopping flushes the exporter, so nothing here waits on a timer.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests
from fake_openai import CHAT_MODEL, EMBEDDING_MODEL, FakeOpenAI
from lamina.testing import serve
from openai import OpenAI
from otlp_receiver import OTLPReceiver
from prometheus_client.parser import text_string_to_metric_families

# vLLM's histogram names, under lamina:
TTFT = "lamina:time_to_first_token_seconds"
TPOT = "lamina:time_per_output_token_seconds"
E2E = "lamina:e2e_request_latency_seconds"
HTTP_DURATION = "lamina:http_request_duration_seconds"
JOB_DURATION = "lamina:ingestion_job_duration_seconds"
PROVIDER_CALL_DURATION = "lamina:provider_call_duration_seconds"

T = TypeVar("T")
SERVER, CLIENT, INTERNAL = 2, 3, 1
UNSET, ERROR = 0, 2  # span status codes
CLIENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as upstream:
        yield upstream


def gateway(fake: FakeOpenAI, telemetry: dict[str, Any], *, vectors: bool = False) -> dict[str, Any]:
    models = [CHAT_MODEL, EMBEDDING_MODEL]
    providers: dict[str, Any] = {
        "inference": [
            {
                "id": "fake",
                "type": "remote::openai",
                "config": {
                    "base_url": fake.base_url,
                    "models": models,
                    "embedding_models": [EMBEDDING_MODEL],
                    "max_retries": 0,
                },
            }
        ]
    }
    config: dict[str, Any] = {"providers": providers, "telemetry": telemetry}
    if vectors:
        providers["files"] = [{"id": "files", "type": "inline::localfs"}]
        providers["vector_io"] = [{"id": "hnswlib", "type": "inline::hnswlib"}]
        config["apis"] = {"vector_io": {"default_embedding_model": f"fake/{EMBEDDING_MODEL}"}}
    return config


def one(found: list[T]) -> T:
    assert len(found) == 1, found
    return found[0]


def test_a_streamed_chat_is_one_trace_from_the_clients_traceparent_to_the_upstream(fake: FakeOpenAI) -> None:
    fake.reset()
    with OTLPReceiver() as receiver:
        config = gateway(fake, {"otlp_endpoint": receiver.endpoint, "service_name": "gateway-under-test"})
        with serve(config) as base_url:
            response = requests.post(
                base_url + "/chat/completions",
                json={
                    "model": f"fake/{CHAT_MODEL}",
                    "messages": [{"role": "user", "content": "one two three four"}],
                    "stream": True,
                    "stream_options": {"include_usage": True},
                    "max_tokens": 50,
                },
                headers={"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"},
                timeout=30,
            )
            assert response.status_code == 200
            assert response.text.rstrip().endswith("data: [DONE]")
            request_id = response.headers["x-request-id"]
        spans = [s for s in receiver.spans if s.trace_id == CLIENT_TRACE]

    server = one([s for s in spans if s.kind == SERVER])
    assert server.parent_id == CLIENT_SPAN  # the client's traceparent is honoured
    assert server.name == "POST /v1/chat/completions"
    assert server.attributes["http.route"] == "/v1/chat/completions"
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["lamina.request_id"] == request_id
    assert server.attributes["lamina.provider.id"] == "fake"
    assert server.service == "gateway-under-test"

    router = one(receiver.children(server))
    assert router.name == "router POST /v1/chat/completions"

    inference = one(receiver.children(router))
    assert inference.name == f"chat {CHAT_MODEL}" and inference.kind == CLIENT
    attributes = inference.attributes
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.request.model"] == CHAT_MODEL
    assert attributes["gen_ai.request.max_tokens"] == 50
    assert attributes["gen_ai.provider.name"] == "remote::openai"
    assert attributes["lamina.provider.id"] == "fake"
    assert attributes["gen_ai.response.finish_reasons"] == ["stop"]
    upstream_usage = fake.hits("/v1/chat/completions")[-1]
    # The fake counts words: "echo: one two three four" is 5 tokens; the prompt is 4 words + 1 per message.
    assert attributes["gen_ai.usage.input_tokens"] == 5
    assert attributes["gen_ai.usage.output_tokens"] == 5
    assert "gen_ai.first_token" in inference.events

    http = one(receiver.children(inference))
    assert http.kind == CLIENT and http.name == "POST"
    assert http.attributes["url.full"] == fake.base_url + "/chat/completions"
    assert http.attributes["http.response.status_code"] == 200

    # The upstream got a traceparent of the same trace, whose parent is the gateway's HTTP client span.
    headers = {k.lower(): v for k, v in upstream_usage["headers"].items()}
    _, trace_id, parent_id, flags = headers["traceparent"].split("-")
    assert (trace_id, parent_id, flags) == (CLIENT_TRACE, http.span_id, "01")


def test_a_vector_store_search_and_its_ingestion_are_traced(fake: FakeOpenAI) -> None:
    fake.reset()
    with OTLPReceiver() as receiver:
        with serve(gateway(fake, {"otlp_endpoint": receiver.endpoint}, vectors=True)) as base_url:
            client = OpenAI(base_url=base_url, api_key="unused", max_retries=0)
            uploaded = client.files.create(file=("notes.txt", b"the cat sat on the mat. " * 20), purpose="assistants")
            store = client.vector_stores.create(name="notes")
            done = client.vector_stores.files.create_and_poll(vector_store_id=store.id, file_id=uploaded.id)
            assert done.status == "completed", done.last_error
            hits = client.vector_stores.search(vector_store_id=store.id, query="where did the cat sit")
            assert hits.data
            samples = metric_samples(base_url)
        spans = list(receiver.spans)

    assert samples[(JOB_DURATION + "_count", frozenset({("status", "done")}))] == 1
    assert samples[("lamina:ingestion_queue_depth", frozenset())] == 1  # sampled as the worker claimed the one job
    search_calls = frozenset({("provider", "hnswlib"), ("operation", "query")})
    assert samples[(PROVIDER_CALL_DURATION + "_count", search_calls)] == 1

    server = one([s for s in spans if s.kind == SERVER and s.name == "POST /v1/vector_stores/{store_id}/search"])
    router = one(receiver.children(server))
    assert router.name == "router POST /v1/vector_stores/{store_id}/search"
    below = {s.name: s for s in receiver.children(router)}
    assert set(below) == {f"embeddings {EMBEDDING_MODEL}", "vector_io.query"}, below
    search = below["vector_io.query"]
    assert search.kind == CLIENT
    assert search.attributes["db.operation.name"] == "query"
    assert search.attributes["db.collection.name"] == store.id
    assert search.attributes["lamina.provider.id"] == "hnswlib"
    embedding = below[f"embeddings {EMBEDDING_MODEL}"]
    assert embedding.attributes["gen_ai.operation.name"] == "embeddings"
    assert one(receiver.children(embedding)).attributes["url.full"] == fake.base_url + "/embeddings"

    # Ingestion runs in the background, outside any request: its own trace, with the work inside it.
    job = one([s for s in spans if s.name == "ingestion_job"])
    assert job.parent_id == ""
    assert job.attributes["lamina.job.key"] == f"{store.id}/{uploaded.id}"
    inside = {s.name for s in receiver.children(job)}
    assert {f"embeddings {EMBEDDING_MODEL}", "vector_io.insert"} <= inside, inside


def metric_samples(base_url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    answer = requests.get(base_url.removesuffix("/v1") + "/metrics", timeout=10)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def test_metrics_count_the_requests_sent(fake: FakeOpenAI, tmp_path: Path) -> None:
    fake.reset()
    chat_route = frozenset({("route", "/v1/chat/completions"), ("method", "POST"), ("provider", "fake")})
    model = frozenset({("model_name", CHAT_MODEL), ("provider", "fake")})
    receiver = OTLPReceiver().__enter__()
    # Pushed over OTLP once, as the server stops (the interval is longer than the test).
    telemetry = {"otlp_endpoint": receiver.endpoint, "export_interval_seconds": 3600}
    with serve(gateway(fake, telemetry)) as base_url:
        client = OpenAI(base_url=base_url, api_key="unused", max_retries=0)
        prompt_tokens = generated = 0
        for text in ("hello there", "a longer question with more words"):
            answer = client.chat.completions.create(
                model=f"fake/{CHAT_MODEL}", messages=[{"role": "user", "content": text}]
            )
            assert answer.usage is not None
            prompt_tokens += answer.usage.prompt_tokens
            generated += answer.usage.completion_tokens
        streamed = client.chat.completions.create(
            model=f"fake/{CHAT_MODEL}",
            messages=[{"role": "user", "content": "stream me five words"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        for chunk in streamed:
            if chunk.usage is not None:
                prompt_tokens += chunk.usage.prompt_tokens
                generated += chunk.usage.completion_tokens
        missing = requests.post(base_url + "/chat/completions", json={"model": "nope", "messages": []}, timeout=10)
        assert missing.status_code == 400
        fake.fail(503, times=1)
        failed = requests.post(
            base_url + "/chat/completions",
            json={"model": f"fake/{CHAT_MODEL}", "messages": [{"role": "user", "content": "x"}]},
            timeout=10,
        )
        assert failed.status_code == 503
        samples = metric_samples(base_url)

    def value(name: str, labels: frozenset[tuple[str, str]]) -> float:
        return samples.get((name, labels), 0.0)

    assert value("lamina:http_requests_total", chat_route | {("status", "200")}) == 3
    assert value("lamina:http_requests_total", chat_route | {("status", "503")}) == 1
    assert value("lamina:prompt_tokens_total", model) == prompt_tokens > 0
    assert value("lamina:generation_tokens_total", model) == generated > 0
    assert value(TTFT + "_count", model) == 1
    assert value(TPOT + "_count", model) == 1
    assert value(E2E + "_count", model) == 3
    assert value("lamina:request_success_total", model | {("finished_reason", "stop")}) == 3
    assert value("lamina:active_streams", model) == 0
    assert value("lamina:upstream_errors_total", frozenset({("provider", "fake"), ("kind", "upstream_error")})) == 1
    request_route = frozenset({("route", "/v1/chat/completions"), ("method", "POST")})
    assert value(HTTP_DURATION + "_count", request_route) == 5

    # The same numbers over OTLP (names without Prometheus' _total/_count suffixes).
    receiver.__exit__()
    pushed = receiver.points
    assert pushed[("lamina:http_requests", chat_route | {("status", "200")})] == 3
    assert pushed[("lamina:prompt_tokens", model)] == prompt_tokens
    assert pushed[("lamina:generation_tokens", model)] == generated
    assert pushed[(TTFT, model)] == 1
    assert pushed[(HTTP_DURATION, request_route)] == 5
    assert pushed[("lamina:active_streams", model)] == 0


def test_the_auth_seam_counts_denials_and_rate_limit_hits(fake: FakeOpenAI) -> None:
    """What the auth middleware calls (lamina.observe.record) shows on /metrics; a middleware of the test's own,
    installed through asgi_wrapper like the auth plugin's would be, stands in for it."""
    from lamina import observe
    from lamina.plugins import make_plugin_manager

    class Denier:
        @staticmethod
        def asgi_wrapper(stack: Any) -> Any:
            def wrap(app: Any) -> Any:
                async def guarded(scope: Any, receive: Any, send: Any) -> None:
                    if scope["type"] == "http" and scope["path"] == "/v1/models":
                        observe.record("auth_denied", reason="missing_key")
                        observe.record("rate_limited", limit="requests_per_minute")
                    await app(scope, receive, send)

                return guarded

            return wrap

    from lamina.hookspecs import hookimpl

    Denier.asgi_wrapper = hookimpl(Denier.asgi_wrapper)  # type: ignore[method-assign]
    pm = make_plugin_manager()
    pm.register(Denier(), name="test-denier")
    with serve(gateway(fake, {}), pm=pm) as base_url:
        for _ in range(2):
            assert requests.get(base_url + "/models", timeout=10).status_code == 200
        samples = metric_samples(base_url)
    assert samples[("lamina:auth_denials_total", frozenset({("reason", "missing_key")}))] == 2
    assert samples[("lamina:rate_limit_hits_total", frozenset({("limit", "requests_per_minute")}))] == 2


def test_switched_off_nothing_is_installed(fake: FakeOpenAI) -> None:
    with serve(gateway(fake, {"enabled": False})) as base_url:
        assert requests.get(base_url.removesuffix("/v1") + "/metrics", timeout=10).status_code == 404
        assert requests.get(base_url + "/models", timeout=10).status_code == 200


def test_a_bad_telemetry_section_is_a_config_error_naming_the_key(fake: FakeOpenAI) -> None:
    from lamina.config import ConfigError

    with pytest.raises(ConfigError, match=r"telemetry\.sampling_ratio"), serve(gateway(fake, {"sampling_ratio": 2})):
        pass


def test_log_lines_and_error_bodies_carry_the_trace_id(fake: FakeOpenAI) -> None:
    """A user's error report (its body's ids) leads to the request's log line and to its trace."""
    import io
    import json
    import logging

    from lamina.requestlog import JsonFormatter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    request_log = logging.getLogger("lamina.request")
    level = request_log.level
    request_log.addHandler(handler)
    request_log.setLevel(logging.INFO)
    try:
        with OTLPReceiver() as receiver:
            with serve(gateway(fake, {"otlp_endpoint": receiver.endpoint})) as base_url:
                refused = requests.post(
                    base_url + "/chat/completions",
                    json={"model": f"fake/{CHAT_MODEL}", "messages": [], "temperature": "hot"},
                    timeout=10,
                )
            spans = list(receiver.spans)
    finally:
        request_log.removeHandler(handler)
        request_log.setLevel(level)
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["request_id"] == refused.headers["x-request-id"]
    server = one([s for s in spans if s.kind == SERVER])
    assert error["trace_id"] == server.trace_id
    assert server.attributes["http.response.status_code"] == 400
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    line = one([entry for entry in lines if entry.get("request_id") == error["request_id"]])
    assert line["trace_id"] == server.trace_id and line["status"] == 400 and line["route"] == "/v1/chat/completions"


def test_the_grafana_dashboard_queries_only_metrics_we_expose() -> None:
    import json
    import re

    from lamina_telemetry.metrics import Metrics

    dashboard = Path(__file__).resolve().parents[3] / "docs" / "grafana-dashboard.json"
    queries = [t["expr"] for p in json.loads(dashboard.read_text())["panels"] for t in p["targets"]]
    used = {name for query in queries for name in re.findall(r"lamina:[a-z0-9_]+", query)}
    suffixes = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_count", "_sum")}
    exposed = {family.name + suffix for family in Metrics().registry.collect() for suffix in suffixes[family.type]}
    assert used and used <= exposed, used - exposed
    assert {TTFT + "_bucket", "lamina:generation_tokens_total"} <= used


def test_sampling_ratio_zero_keeps_only_traces_a_sampled_client_asked_for(fake: FakeOpenAI) -> None:
    fake.reset()
    with OTLPReceiver() as receiver:
        with serve(gateway(fake, {"otlp_endpoint": receiver.endpoint, "sampling_ratio": 0})) as base_url:
            body = {"model": f"fake/{CHAT_MODEL}", "messages": [{"role": "user", "content": "hi"}]}
            assert requests.post(base_url + "/chat/completions", json=body, timeout=10).status_code == 200
            sampled = {"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"}
            assert requests.post(base_url + "/chat/completions", json=body, headers=sampled, timeout=10).ok
        spans = list(receiver.spans)
    assert spans and {s.trace_id for s in spans} == {CLIENT_TRACE}
    # Unsampled, the upstream still gets a traceparent (its sampled flag clear), so it can follow the decision.
    flags = [
        int({k.lower(): v for k, v in r["headers"].items()}["traceparent"].rsplit("-", 1)[1], 16)
        for r in fake.hits("/v1/chat/completions")
    ]
    assert [f & 1 for f in flags] == [0, 1]


def test_a_tool_call_over_mcp_is_an_execute_tool_span_and_the_server_gets_the_trace() -> None:
    pytest.importorskip("mcp")
    from mcp_servers import McpServer

    with McpServer("streamable_http") as mcp_server, OTLPReceiver() as receiver:
        config = {
            "providers": {"tool_runtime": [{"id": "mcp", "type": "remote::model-context-protocol"}]},
            "apis": {
                "tool_runtime": {
                    "toolgroups": [
                        {"toolgroup_id": "mcp::demo", "provider_id": "mcp", "mcp_endpoint": {"uri": mcp_server.url}}
                    ]
                }
            },
            "telemetry": {"otlp_endpoint": receiver.endpoint},
        }
        with serve(config) as base_url:
            result = requests.post(
                f"{base_url}/tool-runtime/invoke",
                json={"tool_name": "add", "kwargs": {"a": 20, "b": 22}},
                headers={"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"},
                timeout=30,
            )
            assert result.status_code == 200 and result.json()["error_message"] is None, result.text
        spans = [s for s in receiver.spans if s.trace_id == CLIENT_TRACE]
        server_headers = list(mcp_server.headers)

    server = one([s for s in spans if s.kind == SERVER])
    router = one(receiver.children(server))
    tool = one([s for s in receiver.children(router) if s.name == "execute_tool add"])
    assert tool.attributes["gen_ai.operation.name"] == "execute_tool"
    assert tool.attributes["gen_ai.tool.name"] == "add"
    assert tool.attributes["mcp.method.name"] == "tools/call"
    assert tool.attributes["lamina.provider.id"] == "mcp"
    # The MCP server was called inside the tool runtime's spans (listing the tools, then calling one): its
    # requests carry them as parents, in the client's trace.
    runtime_spans = {s.span_id: s.name for s in receiver.children(router)}
    parents = [h["traceparent"].split("-")[1:3] for h in server_headers if "traceparent" in h]
    assert parents and all(trace_id == CLIENT_TRACE for trace_id, _ in parents), parents
    assert {runtime_spans.get(parent) for _, parent in parents} == {"execute_tool add", "mcp tools/list"}, parents


def test_the_standard_otel_variables_switch_export_on(fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    with OTLPReceiver() as receiver:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
        monkeypatch.setenv("OTEL_SERVICE_NAME", "from-the-environment")
        monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_on")
        with serve(gateway(fake, {})) as base_url:  # nothing in the run config
            assert requests.get(base_url + "/models", timeout=10).status_code == 200
        spans = list(receiver.spans)
        posts = list(receiver.posts)
    server = one([s for s in spans if s.kind == SERVER and s.name == "GET /v1/models"])
    assert server.service == "from-the-environment"
    assert "/v1/metrics" in posts  # metrics go to the same collector


def test_failures_are_error_spans_and_a_busy_gateway_sends_full_batches(
    fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An upstream failure marks the provider and HTTP client spans as errors, with the exception recorded; with a
    small OTEL_BSP_MAX_EXPORT_BATCH_SIZE the spans go out in several posts, none lost."""
    fake.reset()
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "3")
    body = {"model": f"fake/{CHAT_MODEL}", "messages": [{"role": "user", "content": "hi"}]}
    with OTLPReceiver() as receiver:
        with serve(gateway(fake, {"otlp_endpoint": receiver.endpoint})) as base_url:
            for _ in range(3):
                assert requests.post(base_url + "/chat/completions", json=body, timeout=10).status_code == 200
            fake.fail(503, times=1)
            assert requests.post(base_url + "/chat/completions", json=body, timeout=10).status_code == 503
        spans = list(receiver.spans)
        posts = receiver.trace_posts

    servers = [s for s in spans if s.kind == SERVER and s.name == "POST /v1/chat/completions"]
    assert len(servers) == 4
    traced = [s for s in spans if s.trace_id in {server.trace_id for server in servers}]
    assert len(traced) == 16 and posts >= 6, (len(traced), posts)  # 4 spans per request, batches of 3 or fewer
    failed = one([s for s in servers if s.attributes["http.response.status_code"] == 503])
    assert failed.status == ERROR
    inference = one(receiver.children(one(receiver.children(failed))))
    assert inference.status == ERROR and inference.attributes["error.type"] == "upstream_error"
    assert inference.events["exception"]["exception.type"] == "UpstreamError"
    http = one(receiver.children(inference))
    assert http.status == ERROR and http.attributes["http.response.status_code"] == 503
    succeeded = [s for s in servers if s is not failed]
    assert all(s.status == UNSET for s in succeeded)


def test_the_otlp_exporter_variables_shape_the_span_posts(fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    """OTEL_EXPORTER_OTLP_TRACES_COMPRESSION and OTEL_EXPORTER_OTLP_HEADERS apply to the spans' posts."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "gzip")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-collector-token=secret%20one")
    with OTLPReceiver() as receiver:
        with serve(gateway(fake, {"otlp_endpoint": receiver.endpoint})) as base_url:
            assert requests.get(base_url + "/models", timeout=10).status_code == 200
        spans = list(receiver.spans)
        headers = list(receiver.trace_headers)
    assert one([s for s in spans if s.kind == SERVER and s.name == "GET /v1/models"])
    assert headers and all(h.get("content-encoding") == "gzip" for h in headers), headers
    assert all(h.get("x-collector-token") == "secret one" for h in headers), headers
    assert all(h.get("content-type") == "application/x-protobuf" for h in headers), headers
