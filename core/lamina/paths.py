"""Where Lamina keeps its data: `LAMINA_HOME` (default `~/.lamina`)."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    return Path(os.environ.get("LAMINA_HOME") or Path.home() / ".lamina").expanduser()


def models_dir() -> Path:
    return home() / "models"
