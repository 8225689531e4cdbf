"""inline::torch, live on the real SmolLM2-135M-Instruct (LAMINA_TEST_SMOLLM2). Tool calls are not declared:
a 135M model does not follow tool schemas without grammar-constrained decoding, which inline::torch does not do."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from lamina.conformance import InferenceConformance, Target
from lamina.testing import serve

SMOLLM2 = os.environ.get("LAMINA_TEST_SMOLLM2")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not SMOLLM2, reason="set LAMINA_TEST_SMOLLM2 to SmolLM2-135M-Instruct's GGUF"),
]


@pytest.fixture(scope="module")
def target() -> Iterator[Target]:
    config = {"models": [SMOLLM2], "context_length": 512, "threads": 2}
    with serve({"providers": {"inference": [{"id": "torch", "type": "inline::torch", "config": config}]}}) as url:
        yield Target(base_url=url, model="torch/SmolLM2-135M-Instruct")


class TestInlineTorch(InferenceConformance):
    pass
