"""The conformance suite (`lamina.conformance`) run against Lamina's own inference providers. The fake upstreams
live with the tests that wrote them; they are imported from there."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
for folder in (ROOT / "tests" / "e2e", ROOT / "plugins" / "remote-anthropic" / "tests"):
    if str(folder) not in sys.path:
        sys.path.append(str(folder))
