"""A third-party API (tests/plugins/lamina-example-api: notes, tagged by inline::hashtags), installed like any
package from PyPI and served over HTTP; docs/apis.md is its tutorial."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import pytest
import requests
from lamina.testing import serve

try:
    distribution("lamina-example-api")
except PackageNotFoundError:
    pytest.skip(
        "lamina-example-api is not installed: `pip install tests/plugins/lamina-example-api` (the nox session does)",
        allow_module_level=True,
    )


def config(data_dir: Path, **notes: object) -> dict[str, object]:
    return {
        "storage": {"dir": str(data_dir)},
        "providers": {"notes": [{"id": "tags", "type": "inline::hashtags", "config": {"lowercase": True}}]},
        "apis": {"notes": notes},
    }


def test_notes_over_http_survive_a_restart(tmp_path: Path) -> None:
    with serve(config(tmp_path, max_chars=40)) as url:
        created = requests.post(f"{url}/notes", json={"text": "buy #Milk and #eggs #milk"}, timeout=10)
        assert created.status_code == 200, created.text
        note = created.json()
        assert (note["object"], note["tags"], note["provider_id"]) == ("note", ["milk", "eggs"], "tags")
        too_long = requests.post(f"{url}/notes", json={"text": "x" * 41}, timeout=10)
        assert too_long.status_code == 400 and too_long.json()["error"]["param"] == "text"
        unknown = requests.post(f"{url}/notes", json={"text": "hi", "provider_id": "nope"}, timeout=10)
        assert unknown.status_code == 400 and "nope" in unknown.json()["error"]["message"]
        assert requests.post(f"{url}/notes", json={"txt": "typo"}, timeout=10).status_code == 400
        documented = requests.get(f"{url}/openapi.json", timeout=10).json()["paths"]
        assert {"/v1/notes", "/v1/notes/{note_id}"} <= set(documented)
    with serve(config(tmp_path)) as url:  # a new server over the same storage
        assert requests.get(f"{url}/notes/{note['id']}", timeout=10).json() == note
        assert [n["id"] for n in requests.get(f"{url}/notes", timeout=10).json()["data"]] == [note["id"]]
        assert requests.delete(f"{url}/notes/{note['id']}", timeout=10).json()["deleted"] is True
        missing = requests.get(f"{url}/notes/{note['id']}", timeout=10)
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_a_bad_api_config_names_the_key(tmp_path: Path) -> None:
    from lamina.config import ConfigError

    with pytest.raises(ConfigError, match=r"apis\.notes\.max_chars"), serve(config(tmp_path, max_chars=0)):
        pass


def test_without_a_provider_notes_are_a_400(tmp_path: Path) -> None:
    with serve({"storage": {"dir": str(tmp_path)}}) as url:
        answer = requests.post(f"{url}/notes", json={"text": "hello"}, timeout=10)
    assert answer.status_code == 400 and "providers.notes" in answer.json()["error"]["message"]
