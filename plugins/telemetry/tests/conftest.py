"""The telemetry plugin is tested against the scripted fake upstream of the end-to-end tests and a real OTLP/HTTP
receiver of its own (otlp_receiver.py)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests" / "e2e"))
sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests" / "tools"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
