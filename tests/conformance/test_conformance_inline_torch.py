"""inline::torch, live on the real SmolLM2-135M-Instruct (LAMINA_TEST_SMOLLM2). Tool calls are not declared:
a 135M model does not follow tool schemas without grammar-constrained decoding, which inline::torch does not do."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from lamina.conformance import InferenceConformance, Target
from lamina.testing import serve

SMOLLM2 = os.environ.get("LAMINA_TEST_SMOLLM2")
# Where the suite's servers share converted weights (nox sets it), so only the first start converts the model.
WEIGHT_CACHE = os.environ.get("LAMINA_TEST_WEIGHT_CACHE", True)
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not SMOLLM2, reason="set LAMINA_TEST_SMOLLM2 to SmolLM2-135M-Instruct's GGUF"),
]


@pytest.fixture(scope="module")
def target() -> Iterator[Target]:
    config = {"models": [SMOLLM2], "context_length": 512, "threads": 2, "weight_cache": WEIGHT_CACHE}
    with serve({"providers": {"inference": [{"id": "torch", "type": "inline::torch", "config": config}]}}) as url:
        yield Target(base_url=url, model="torch/SmolLM2-135M-Instruct")


class TestInlineTorch(InferenceConformance):
    pass
