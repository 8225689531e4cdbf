"""The `endpoint` fixture: a small HTTP server on 127.0.0.1 whose answers a test sets."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from http_endpoint import Endpoint


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    served = Endpoint()
    yield served
    served.close()
