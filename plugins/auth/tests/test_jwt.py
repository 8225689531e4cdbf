"""The `jwt` provider against a JWKS this test serves on 127.0.0.1, with RSA keys it makes and tokens PyJWT signs."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jwt
import requests
from cryptography.hazmat.primitives.asymmetric import rsa
from http_endpoint import Endpoint, files_stack
from lamina.testing import serve


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    public = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {**public, "kid": kid, "use": "sig", "alg": "RS256"}


def token(key: rsa.RSAPrivateKey, kid: str, sub: str, *, expires_in: float = 300, **claims: Any) -> str:
    payload = {
        "sub": sub,
        "iss": "https://issuer.test",
        "aud": "lamina",
        "exp": int(time.time() + expires_in),
        **claims,
    }
    return jwt.encode(payload, key, algorithm="RS256", headers={"kid": kid})


def get(url: str, path: str, bearer: str) -> requests.Response:
    return requests.get(url + path, headers={"Authorization": f"Bearer {bearer}"}, timeout=10)


def config(tmp_path: Path, endpoint: Endpoint) -> dict[str, Any]:
    provider = {
        "jwks_url": endpoint.url + "jwks",
        "issuer": "https://issuer.test",
        "audience": "lamina",
        "jwks_refresh_min_seconds": 0,
        "leeway_seconds": 0,
    }
    return files_stack(tmp_path, {"providers": [{"id": "sso", "type": "jwt", "config": provider}]})


def test_tokens_verified_against_the_jwks(tmp_path: Path, endpoint: Endpoint) -> None:
    first, stranger = rsa_key(), rsa_key()
    jwks = {"keys": [jwk(first, "k1")]}
    endpoint.answer = lambda method, body: (200, jwks)
    with serve(config(tmp_path, endpoint)) as url:
        alice = token(first, "k1", "alice", groups=["ml"])
        uploaded = requests.post(
            f"{url}/files",
            files={"file": ("a.txt", b"alice's")},
            data={"purpose": "assistants"},
            headers={"Authorization": f"Bearer {alice}"},
            timeout=10,
        )
        assert uploaded.status_code == 200, uploaded.text
        file_id = uploaded.json()["id"]
        assert get(url, f"/files/{file_id}", alice).status_code == 200
        assert get(url, f"/files/{file_id}", token(first, "k1", "bob")).status_code == 404
        assert get(url, "/files", token(first, "k1", "bob")).json()["data"] == []
        # Expired, signed by a key the JWKS does not hold (under a known and an unknown key id), wrong audience.
        refused = [
            token(first, "k1", "alice", expires_in=-60),
            token(stranger, "k1", "alice"),
            token(stranger, "k9", "alice"),
            jwt.encode(
                {"sub": "alice", "aud": "other", "iss": "https://issuer.test", "exp": int(time.time()) + 60},
                first,
                algorithm="RS256",
                headers={"kid": "k1"},
            ),
            "not.a.jwt",
        ]
        for bad in refused:
            response = get(url, "/files", bad)
            assert response.status_code == 401, (bad, response.text)
            assert response.json()["error"]["code"] == "invalid_api_key"


def test_keys_rotate(tmp_path: Path, endpoint: Endpoint) -> None:
    old, new = rsa_key(), rsa_key()
    jwks = {"keys": [jwk(old, "old")]}
    endpoint.answer = lambda method, body: (200, jwks)
    with serve(config(tmp_path, endpoint)) as url:
        assert get(url, "/files", token(old, "old", "alice")).status_code == 200
        fetches = len(endpoint.requests)
        assert get(url, "/files", token(old, "old", "alice", jti="2")).status_code == 200
        assert len(endpoint.requests) == fetches  # the keys are cached
        jwks["keys"] = [jwk(new, "new")]  # the issuer rotates: the new key id makes Lamina fetch the keys again
        assert get(url, "/files", token(new, "new", "alice")).status_code == 200
        assert len(endpoint.requests) == fetches + 1
        assert get(url, "/files", token(old, "old", "alice", jti="3")).status_code == 401


def test_an_unreachable_jwks_is_a_503(tmp_path: Path, endpoint: Endpoint) -> None:
    endpoint.answer = lambda method, body: (500, {})
    with serve(config(tmp_path, endpoint)) as url:
        response = get(url, "/files", token(rsa_key(), "k1", "alice"))
        assert response.status_code == 503
        assert "sso" in response.json()["error"]["message"]


def test_a_scope_claim_limits_the_apis(tmp_path: Path, endpoint: Endpoint) -> None:
    key = rsa_key()
    endpoint.answer = lambda method, body: (200, {"keys": [jwk(key, "k1")]})
    scoped = config(tmp_path, endpoint)
    scoped["auth"]["providers"][0]["config"]["scopes_claim"] = "scope"
    with serve(scoped) as url:
        assert get(url, "/files", token(key, "k1", "alice", scope="files inference")).status_code == 200
        refused = get(url, "/files", token(key, "k1", "alice", scope="inference"))
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "permission_denied"
