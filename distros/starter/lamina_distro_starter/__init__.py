"""The starter distro: Lamina in front of OpenAI-compatible upstreams."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import lamina


@lamina.hookimpl
def register_distros() -> list[lamina.DistroSpec]:
    run_config = Path(str(files(__name__) / "run.yaml"))
    return [lamina.DistroSpec("starter", run_config, "a gateway to OpenAI-compatible upstreams (remote only)")]
