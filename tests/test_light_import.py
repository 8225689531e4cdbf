"""Loading every installed plugin and starting a remote-only stack must not import the heavy ML libraries:
`lamina providers` and a gateway deployment stay fast and small."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HEAVY = ("torch", "numpy", "hnswlib", "sentence_transformers", "transformers")

SCRIPT = r"""
import asyncio, json, sys, traceback

HEAVY = set(sys.argv[1].split(","))
first_import = {}


class Recorder:
    # Remembers who imported each heavy module first, so a failure says where to look.
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in HEAVY and top not in first_import:
            first_import[top] = "".join(traceback.format_stack(limit=25)[:-1])
        return None


sys.meta_path.insert(0, Recorder())

import lamina
from lamina.cli import cli
from lamina.config import resolve
from lamina.plugins import api_specs, distro_specs, list_plugins, make_plugin_manager, model_sources, provider_specs
from lamina.resolver import start_stack
from lamina.server import create_app

pm = make_plugin_manager()
providers, distros = provider_specs(pm), distro_specs(pm)
api_specs(pm), model_sources(pm), list_plugins(pm)
remote = sorted(t for t in providers if t.startswith("remote::"))
config = resolve({
    "storage": {"dir": sys.argv[2]},
    "providers": {"inference": [
        {"id": "up", "type": "remote::openai", "config": {"base_url": "http://127.0.0.1:9/v1", "models": ["m"]}}
    ]},
})


async def main():
    async with start_stack(config, pm) as stack:
        create_app(stack)
        await stack.apis["inference"].list_models()


asyncio.run(main())
print(json.dumps({"providers": sorted(providers), "distros": sorted(distros), "remote": remote,
                  "heavy": {name: first_import.get(name, "") for name in HEAVY if name in sys.modules}}))
"""


def test_plugins_and_remote_stack_import_no_heavy_modules(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, ",".join(HEAVY), str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert "remote::openai" in report["providers"] and "starter" in report["distros"]
    heavy = report["heavy"]
    assert not heavy, "heavy modules imported:\n" + "\n".join(
        f"--- {name}, first by:\n{stack}" for name, stack in heavy.items()
    )
