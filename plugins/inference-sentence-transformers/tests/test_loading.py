"""inline::sentence-transformers loads its models in the background: the server answers before they are loaded,
requests wait for the load, and a load that fails answers with a 503 saying why (through the real server)."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

MINILM = os.environ.get("LAMINA_TEST_MINILM")
pytestmark = pytest.mark.skipif(not MINILM, reason="set LAMINA_TEST_MINILM to an all-MiniLM-L6-v2 folder")

openai = pytest.importorskip("openai")


def config(folder: Path) -> dict:
    return {
        "providers": {
            "inference": [{"id": "st", "type": "inline::sentence-transformers", "config": {"models": [str(folder)]}}]
        }
    }


@pytest.fixture
def held_model(tmp_path):
    """A copy of MiniLM whose modules.json is a named pipe: loading it blocks until the test releases it."""
    folder = tmp_path / "held-minilm"
    folder.mkdir()
    for entry in Path(MINILM or "").iterdir():
        if entry.name != "modules.json":
            (folder / entry.name).symlink_to(entry)
    pipe = folder / "modules.json"
    os.mkfifo(pipe)
    content = (Path(MINILM or "") / "modules.json").read_bytes()
    released = threading.Event()

    def feed() -> None:
        released.wait()
        with contextlib.suppress(OSError), pipe.open("wb") as writer:  # blocks until the loader opens it
            writer.write(content)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    yield folder, released
    released.set()
    os.close(os.open(pipe, os.O_RDONLY | os.O_NONBLOCK))  # lets a feeder still blocked in open() finish
    feeder.join(5)


def test_the_server_answers_before_the_model_is_loaded(held_model, caplog):
    from lamina.testing import serve

    caplog.set_level(logging.INFO, logger="lamina.sentence_transformers")
    folder, released = held_model
    # Were the load done in `create`, serve() would not return: the load is blocked until `released`.
    with serve(config(folder)) as base_url:
        assert requests.get(f"{base_url}/health", timeout=10).status_code == 200
        assert not any(record.getMessage().startswith("loaded held-minilm") for record in caplog.records)
        client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0)
        with ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(client.embeddings.create, model="st/held-minilm", input="a cat")  # waits for the load
            released.set()
            assert len(waiting.result(120).data[0].embedding) == 384
        assert "st/held-minilm" in {model.id for model in client.models.list()}
    assert any(record.getMessage().startswith("loaded held-minilm") for record in caplog.records)


def test_a_model_that_fails_to_load_is_a_503_saying_why(tmp_path, caplog):
    from lamina.testing import serve

    caplog.set_level(logging.INFO, logger="lamina.sentence_transformers")
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "modules.json").write_text("this is not json")
    with serve(config(broken)) as base_url:
        client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0)
        for _ in range(2):
            with pytest.raises(openai.APIStatusError) as caught:
                client.embeddings.create(model="st/broken-model", input="hi")
            assert caught.value.status_code == 503
            message = caught.value.body["message"]
            assert "provider 'st'" in message and "could not load" in message and "restart" in message
            assert "broken-model" in message
        assert requests.get(f"{base_url}/health", timeout=10).status_code == 200
        assert "st/broken-model" not in {model.id for model in client.models.list()}
    failures = [
        record
        for record in caplog.records
        if record.name == "lamina.sentence_transformers" and "could not load" in record.getMessage()
    ]
    assert len(failures) == 1
