"""A third-party plugin, installed from tests/plugins/lamina-example like any package from PyPI."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import pytest
from lamina.plugins import make_plugin_manager, provider_specs
from lamina.testing import serve
from openai import OpenAI

try:
    distribution("lamina-example")
except PackageNotFoundError:
    pytest.skip(
        "lamina-example is not installed: `pip install tests/plugins/lamina-example` (the nox session does)",
        allow_module_level=True,
    )

RUN_YAML = """
distro: example
providers:
  inference:
    - id: parrot
      type: inline::echo
      config:
        prefix: "${env.PARROT_PREFIX:=squawk: }"
"""


def test_discovered_with_its_distribution() -> None:
    spec = provider_specs(make_plugin_manager())["inline::echo"]
    assert (spec.api, spec.package, spec.version) == ("inference", "lamina-example", "0.1.0")
    # Installed as a real, non-editable package: its module lives in site-packages, not in this repo.
    module = sys.modules[spec.create.__module__]
    assert "site-packages" in str(module.__file__)


def test_listed_by_lamina_providers() -> None:
    command = [sys.executable, "-c", "from lamina.cli import main; main()", "providers", "--json"]
    rows = json.loads(subprocess.run(command, capture_output=True, text=True, check=True, timeout=60).stdout)
    assert {"api": "inference", "type": "inline::echo", "package": "lamina-example", "version": "0.1.0"} in rows


def test_served_from_a_run_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARROT_PREFIX", "polly says: ")
    run_yaml = tmp_path / "run.yaml"
    run_yaml.write_text(RUN_YAML)
    with serve(run_yaml) as url:
        client = OpenAI(base_url=url, api_key="unused", max_retries=0)
        assert [m.id for m in client.models.list()] == ["parrot/echo-1"]
        reply = client.chat.completions.create(
            model="parrot/echo-1", messages=[{"role": "user", "content": "first"}, {"role": "user", "content": "hi"}]
        )
        assert reply.choices[0].message.content == "polly says: hi"
        assert reply.model == "parrot/echo-1"
        stream = client.chat.completions.create(
            model="parrot/echo-1", messages=[{"role": "user", "content": "one two three"}], stream=True
        )
        chunks = list(stream)
        assert len(chunks) == 7  # the role, five words, the finish
        assert "".join(c.choices[0].delta.content or "" for c in chunks) == "polly says: one two three"
        assert chunks[-1].choices[0].finish_reason == "stop"
        provider = client.get("/providers/parrot", cast_to=object)
        assert provider["package"] == "lamina-example" and provider["config"] == {"prefix": "polly says: "}
