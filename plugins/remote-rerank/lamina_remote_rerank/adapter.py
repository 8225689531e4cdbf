"""The aiohttp side of remote::rerank: one pooled session; the upstream's faults become errors naming the provider."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
from lamina import LaminaError, UpstreamError

from lamina_remote_rerank import RemoteRerankConfig


class RemoteReranker:
    def __init__(self, config: RemoteRerankConfig, provider_id: str) -> None:
        self.config = config
        self.provider_id = provider_id
        self.models = list(config.models)
        self.url = config.base_url.rstrip("/") + "/rerank"
        headers = {"Content-Type": "application/json"}
        if config.api_key is not None and config.api_key.get_secret_value():
            headers["Authorization"] = f"Bearer {config.api_key.get_secret_value()}"
        self.session = aiohttp.ClientSession(
            headers=headers,
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=config.connect_timeout, sock_read=config.read_timeout
            ),
        )

    async def close(self) -> None:
        await self.session.close()

    async def rerank(self, model: str, query: str, items: list[str], top_n: int | None) -> list[tuple[int, float]]:
        payload: dict[str, Any] = {"model": model, "query": query, "documents": items}
        if top_n is not None:
            payload["top_n"] = top_n
        try:
            async with self.session.post(self.url, data=orjson.dumps(payload)) as response:
                body = await response.read()
                status = response.status
        except TimeoutError:
            raise UpstreamError(
                self.provider_id, f"{self.url} did not answer in time", status=504, code="upstream_timeout"
            ) from None
        except aiohttp.ClientError as exc:
            raise UpstreamError(
                self.provider_id, f"cannot reach {self.url} ({exc.__class__.__name__}: {exc})", status=503
            ) from None
        if status >= 400:
            raise self._error(status, body)
        return self._ranking(body, len(items))

    def _error(self, status: int, body: bytes) -> LaminaError:
        try:
            error = orjson.loads(body).get("error")
            message = error.get("message") if isinstance(error, dict) else error
        except (orjson.JSONDecodeError, AttributeError):
            message = None
        message = str(message or body[:300].decode("utf-8", "replace"))
        if status in (400, 404, 413, 422):  # the upstream judged the request: the client's to fix
            return LaminaError(f"provider '{self.provider_id}': {message}", status=400, code="upstream_rejected")
        return UpstreamError(
            self.provider_id, f"{self.url} answered {status}: {message}", status=503 if status >= 500 else 502
        )

    def _ranking(self, body: bytes, count: int) -> list[tuple[int, float]]:
        try:
            results = orjson.loads(body)["results"]
            ranked = [(int(r["index"]), float(r["relevance_score"])) for r in results]
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            raise UpstreamError(self.provider_id, f"{self.url} answered with no `results` list") from None
        if any(not 0 <= index < count for index, _ in ranked):
            raise UpstreamError(self.provider_id, f"{self.url} answered with an index outside the {count} documents")
        return sorted(ranked, key=lambda pair: -pair[1])
