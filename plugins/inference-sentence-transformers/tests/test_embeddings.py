"""inline::sentence-transformers through the real server and the official openai client, on the real MiniLM."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
from pathlib import Path

import pytest

MINILM = os.environ.get("LAMINA_TEST_MINILM")
pytestmark = pytest.mark.skipif(
    not MINILM,
    reason="set LAMINA_TEST_MINILM to an all-MiniLM-L6-v2 folder (e.g. `lamina models pull all-MiniLM-L6-v2`, "
    "then $LAMINA_HOME/models/all-MiniLM-L6-v2) to run the real-model tests",
)

np = pytest.importorskip("numpy")
openai = pytest.importorskip("openai")

SENTENCES = [
    "The cat sits on the mat.",
    "A quick brown fox jumps over the lazy dog.",
    "Embeddings turn text into vectors.",
    "Lamina serves OpenAI-compatible APIs from plugins.",
    "Il pleut des cordes aujourd'hui.",
    "short",
]


@pytest.fixture(scope="module")
def model_id() -> str:
    return f"st/{Path(MINILM or '').name}"


@pytest.fixture(scope="module")
def base_url():
    from lamina.testing import serve

    config = {
        "providers": {
            "inference": [
                {"id": "st", "type": "inline::sentence-transformers", "config": {"models": [MINILM], "batch_size": 8}}
            ]
        }
    }
    with serve(config) as url:
        yield url


@pytest.fixture(scope="module")
def reference():
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(MINILM, device="cpu", local_files_only=True)


@pytest.fixture
def client(base_url):
    return openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0)


def cosine(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_lists_the_model_with_its_dimension(client, model_id):
    models = {model.id: model for model in client.models.list()}
    assert model_id in models
    model = models[model_id].model_dump()
    assert model["model_type"] == "embedding"
    assert model["metadata"] == {"embedding_dimension": 384, "context_length": 256}


def test_float_embeddings_match_sentence_transformers(client, model_id, reference):
    response = client.embeddings.create(model=model_id, input=SENTENCES, encoding_format="float")
    expected = reference.encode(SENTENCES)
    assert [item.index for item in response.data] == list(range(len(SENTENCES)))
    for item, want in zip(response.data, expected, strict=True):
        assert len(item.embedding) == 384
        assert cosine(item.embedding, want) > 0.9999
    assert response.model == model_id
    assert response.usage.prompt_tokens == sum(len(ids) for ids in reference.tokenizer(SENTENCES)["input_ids"])


def test_base64_embeddings_match_float(client, base_url, model_id, reference):
    # The openai client asks for base64 by default and decodes it itself.
    decoded = client.embeddings.create(model=model_id, input="The cat sits on the mat.").data[0].embedding
    assert cosine(decoded, reference.encode("The cat sits on the mat.")) > 0.9999
    raw = client.post(
        "/embeddings",
        body={"model": model_id, "input": ["a", "b"], "encoding_format": "base64"},
        cast_to=object,
    )
    vectors = [np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4") for item in raw["data"]]
    floats = client.embeddings.create(model=model_id, input=["a", "b"], encoding_format="float").data
    for vector, item in zip(vectors, floats, strict=True):
        assert vector.shape == (384,)
        assert np.allclose(vector, item.embedding, atol=1e-6)


def test_a_large_batch_keeps_order(client, model_id, reference):
    inputs = [f"sentence number {i} about {'cats' if i % 2 else 'dogs'}" for i in range(70)]
    response = client.embeddings.create(model=model_id, input=inputs, encoding_format="float")
    expected = reference.encode(inputs)
    assert len(response.data) == 70
    assert min(cosine(item.embedding, want) for item, want in zip(response.data, expected, strict=True)) > 0.9999


async def test_concurrent_requests_are_batched_together(base_url, model_id, reference, caplog):
    caplog.set_level(logging.DEBUG, logger="lamina.sentence_transformers")
    client = openai.AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0)
    inputs = [f"concurrent request {i}" for i in range(24)]
    responses = await asyncio.gather(
        *(client.embeddings.create(model=model_id, input=text, encoding_format="float") for text in inputs)
    )
    expected = reference.encode(inputs)
    for response, want in zip(responses, expected, strict=True):
        assert cosine(response.data[0].embedding, want) > 0.9999
    merged = [record.args[1] for record in caplog.records if record.msg.startswith("ran %d items")]
    assert sum(merged) == 24
    assert max(merged) > 1, f"no two requests were merged: {merged}"
    await client.close()


def test_dimensions_truncates_and_renormalises(client, model_id, reference):
    response = client.embeddings.create(model=model_id, input=SENTENCES[0], dimensions=128, encoding_format="float")
    vector = np.asarray(response.data[0].embedding)
    assert vector.shape == (128,)
    assert abs(np.linalg.norm(vector) - 1) < 1e-5
    assert cosine(vector, reference.encode(SENTENCES[0])[:128]) > 0.9999


def test_dimensions_larger_than_the_model_is_a_400(client, model_id):
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model=model_id, input="hi", dimensions=385)
    assert caught.value.body["param"] == "dimensions"


@pytest.mark.parametrize(
    "body",
    [
        {"input": []},
        {"input": ""},
        {"input": ["fine", ""]},
        {"input": [[]]},
        {"input": [999999999]},
        {"input": 42},
        {"input": "x", "encoding_format": "hex"},
        {"input": "x", "dimensions": 0},
    ],
    ids=["empty-list", "empty-string", "one-empty", "empty-tokens", "bad-token", "number", "format", "dimensions-0"],
)
def test_bad_input_is_a_400(client, model_id, body):
    with pytest.raises(openai.BadRequestError):
        client.post("/embeddings", body={"model": model_id, **body}, cast_to=object)


def test_token_ids_are_the_models_own(client, model_id, reference):
    ids = reference.tokenizer("The cat sits on the mat.")["input_ids"]
    from_ids = client.embeddings.create(model=model_id, input=[ids], encoding_format="float").data[0].embedding
    assert cosine(from_ids, reference.encode("The cat sits on the mat.")) > 0.9999


def test_chat_on_an_embedding_model_is_a_400(client, model_id):
    with pytest.raises(openai.BadRequestError, match="embedding model"):
        client.chat.completions.create(model=model_id, messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError, match="embedding model"):
        client.completions.create(model=model_id, prompt="hi")


def test_unknown_model_is_a_404(client):
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="st/no-such-model", input="hi")
