"""A provider's errors name the model by the id the client sent (`torch/SmolLM2-135M-Instruct`, an alias), not by
the provider's own id: real providers on real models, through the server and the official openai client."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import openai
import pytest
from lamina.testing import serve
from openai import OpenAI

SMOLLM2 = os.environ.get("LAMINA_TEST_SMOLLM2")
# Where the suite's servers share converted weights (nox sets it), so only the first start converts the model.
WEIGHT_CACHE = os.environ.get("LAMINA_TEST_WEIGHT_CACHE", True)
MINILM = os.environ.get("LAMINA_TEST_MINILM")
needs_models = pytest.mark.skipif(
    not (SMOLLM2 and MINILM), reason="set LAMINA_TEST_SMOLLM2 and LAMINA_TEST_MINILM (see /tmp/testenv.sh)"
)
MINI = Path(MINILM or "").name  # all-MiniLM-L6-v2: the sentence-transformers provider's own id


@pytest.fixture(scope="module")
def client() -> Iterator[OpenAI]:
    config = {
        "providers": {
            "inference": [
                {"id": "st", "type": "inline::sentence-transformers", "config": {"models": [MINILM]}},
                {
                    "id": "torch",
                    "type": "inline::torch",
                    "config": {"models": [SMOLLM2], "context_length": 256, "weight_cache": WEIGHT_CACHE},
                },
            ]
        },
        "apis": {"inference": {"models": [{"id": "mini", "provider_id": "st", "provider_model_id": MINI}]}},
    }
    with serve(config) as url:
        yield OpenAI(base_url=url, api_key="unused", max_retries=0)


def message_of(call: Any) -> str:
    with pytest.raises(openai.APIStatusError) as caught:
        call()
    assert caught.value.status_code == 400
    return caught.value.message


@needs_models
def test_embeddings_of_a_generation_model_name_the_model_as_sent(client: OpenAI) -> None:
    message = message_of(lambda: client.embeddings.create(model="torch/SmolLM2-135M-Instruct", input="hi"))
    assert "'torch/SmolLM2-135M-Instruct' is a text generation model" in message
    assert "'SmolLM2-135M-Instruct'" not in message


@needs_models
@pytest.mark.parametrize("model", [f"st/{MINI}", "mini"])
def test_chat_and_completions_on_an_embedding_model_name_the_model_as_sent(client: OpenAI, model: str) -> None:
    messages: Any = [{"role": "user", "content": "hi"}]
    for call in (
        lambda: client.chat.completions.create(model=model, messages=messages),
        lambda: client.chat.completions.create(model=model, messages=messages, stream=True),
        lambda: client.completions.create(model=model, prompt="hi"),
    ):
        message = message_of(call)
        assert f"'{model}' is an embedding model" in message and f"'{MINI}'" not in message


@needs_models
def test_an_alias_is_named_in_the_providers_errors(client: OpenAI) -> None:
    message = message_of(lambda: client.embeddings.create(model="mini", input="hi", dimensions=1000))
    assert "'mini' makes 384-dimensional embeddings" in message


class NoSuchModel(BaseHTTPRequestHandler):
    """An upstream that lists one model and answers every call as OpenAI does for a model it does not have."""

    def do_GET(self) -> None:
        self.answer(200, {"object": "list", "data": [{"id": "gpt-x", "object": "model", "owned_by": "up"}]})

    def do_POST(self) -> None:
        model = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["model"]
        message = f"The model `{model}` does not exist or you do not have access to it."
        self.answer(404, {"error": {"message": message, "type": "invalid_request_error", "code": "model_not_found"}})

    def answer(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


def test_an_upstreams_error_names_the_model_as_sent() -> None:
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), NoSuchModel)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    try:
        remote = {"base_url": f"http://127.0.0.1:{upstream.server_port}/v1", "max_retries": 0}
        config = {
            "providers": {"inference": [{"id": "up", "type": "remote::openai", "config": remote}]},
            "apis": {"inference": {"models": [{"id": "smart", "provider_id": "up", "provider_model_id": "gpt-x"}]}},
        }
        with serve(config) as url:
            client = OpenAI(base_url=url, api_key="unused", max_retries=0)
            for model in ("smart", "up/gpt-x"):
                with pytest.raises(openai.NotFoundError) as caught:
                    client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
                assert f"The model `{model}` does not exist" in caught.value.message
                with pytest.raises(openai.NotFoundError) as caught:
                    client.embeddings.create(model=model, input="hi")
                assert f"The model `{model}` does not exist" in caught.value.message
    finally:
        upstream.shutdown()
        upstream.server_close()
