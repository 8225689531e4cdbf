"""The postgres distro: Lamina in front of OpenAI-compatible upstreams, its state in PostgreSQL, so any number
of replicas can serve behind one load balancer."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import lamina


@lamina.hookimpl
def register_distros() -> list[lamina.DistroSpec]:
    run_config = Path(str(files(__name__) / "run.yaml"))
    return [lamina.DistroSpec("postgres", run_config, "remote upstreams; registries, files and vectors in PostgreSQL")]
