"""`register_auth_providers`: a third party's way to authenticate callers, registered with the hook and served."""

from __future__ import annotations

import types
from pathlib import Path

import lamina
import requests
from lamina.access import Principal
from lamina.plugins import make_plugin_manager
from lamina.specs import AuthDeps, AuthProviderSpec
from lamina.testing import serve


class TeamTokens(lamina.ProviderConfig):
    """Fixed tokens, each naming a principal and its team."""

    tokens: dict[str, str]  # token -> "principal@team"


class TeamTokenAuth:
    def __init__(self, config: TeamTokens) -> None:
        self.tokens = config.tokens

    async def authenticate(self, token: str) -> Principal | None:
        if token not in self.tokens:
            return None
        name, _, team = self.tokens[token].partition("@")
        return Principal(principal=name, attributes={"teams": [team]})


async def create(config: TeamTokens, deps: AuthDeps) -> TeamTokenAuth:
    return TeamTokenAuth(config)


def register_auth_providers() -> list[AuthProviderSpec]:
    return [AuthProviderSpec(type="team-tokens", config=TeamTokens, create=create, description="fixed tokens")]


def test_a_plugin_auth_provider_names_callers(tmp_path: Path) -> None:
    plugin = types.ModuleType("team_tokens")
    plugin.register_auth_providers = lamina.hookimpl(register_auth_providers)  # type: ignore[attr-defined]
    pm = make_plugin_manager()
    pm.register(plugin, "team_tokens")
    tokens = {"t-ann": "ann@red", "t-ben": "ben@red", "t-cy": "cy@blue"}
    config = {
        "storage": {"dir": str(tmp_path)},
        "providers": {"files": [{"id": "files", "type": "inline::localfs", "config": {}}]},
        "auth": {
            "providers": [{"id": "teams", "type": "team-tokens", "config": {"tokens": tokens}}],
            "access_policy": [
                {"permit": {"actions": ["create", "read", "update", "delete"]}, "when": "user is owner"},
                {"permit": {"actions": ["read"], "resource": "file::*"}, "when": "user in owners teams"},
            ],
        },
    }
    with serve(config, pm=pm) as url:

        def get(path: str, token: str) -> requests.Response:
            return requests.get(url + path, headers={"Authorization": f"Bearer {token}"}, timeout=10)

        sent = {"file": ("a.txt", b"red team notes")}
        file_id = requests.post(
            f"{url}/files", files=sent, data={"purpose": "assistants"}, headers={"Authorization": "Bearer t-ann"}
        ).json()["id"]
        assert get(f"/files/{file_id}/content", "t-ben").content == b"red team notes"  # same team: may read
        assert get(f"/files/{file_id}", "t-cy").status_code == 404
        assert get("/files", "t-nobody").status_code == 401
        deleted = requests.delete(f"{url}/files/{file_id}", headers={"Authorization": "Bearer t-ben"}, timeout=10)
        assert deleted.status_code == 403  # reading is not deleting
