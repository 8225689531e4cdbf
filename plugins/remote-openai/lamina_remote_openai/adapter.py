"""The aiohttp side of remote::openai: one pooled session, retries before the first byte, streaming relay."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
from lamina import LaminaError, UpstreamError, observe
from lamina.apis.inference.types import ChatCompletionRequest, CompletionRequest, EmbeddingRequest, ModelInfo
from pydantic import BaseModel

from lamina_remote_openai import OpenAIConfig

RETRY_STATUSES = {429, 500, 502, 503, 504}
EMBEDDING_HINTS = ("embed", "bge-", "e5-", "gte-", "minilm")


class OpenAIAdapter:
    def __init__(self, config: OpenAIConfig, provider_id: str) -> None:
        self.config = config
        self.provider_id = provider_id
        self.base_url = config.base_url
        headers = {"Content-Type": "application/json", **config.headers}
        if config.api_key is not None and config.api_key.get_secret_value():
            headers["Authorization"] = f"Bearer {config.api_key.get_secret_value()}"
        self.session = aiohttp.ClientSession(
            headers=headers,
            connector=aiohttp.TCPConnector(limit=config.max_connections, ttl_dns_cache=300),
            cookie_jar=aiohttp.DummyCookieJar(),  # an API client keeps no cookies; skipping the jar saves CPU
            trace_configs=observe.client_hooks("aiohttp") or None,  # spans and `traceparent`, when observed
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=config.connect_timeout, sock_read=config.read_timeout
            ),
        )

    async def close(self) -> None:
        await self.session.close()

    async def list_models(self) -> list[ModelInfo]:
        ids = self.config.models
        if ids is None:
            async with await self._send("GET", "/models", None) as response:
                ids = [item["id"] for item in orjson.loads(await response.read())["data"]]
        return [ModelInfo(id=model_id, model_type=self._model_type(model_id)) for model_id in ids]

    def _model_type(self, model_id: str) -> Any:
        lowered = model_id.lower()
        if model_id in self.config.embedding_models or any(hint in lowered for hint in EMBEDDING_HINTS):
            return "embedding"
        return "llm"

    async def chat_completion(self, request: ChatCompletionRequest) -> dict[str, Any] | AsyncIterator[dict[str, Any]]:
        return await self._call("/chat/completions", request)

    async def completion(self, request: CompletionRequest) -> dict[str, Any] | AsyncIterator[dict[str, Any]]:
        return await self._call("/completions", request)

    async def embeddings(self, request: EmbeddingRequest) -> dict[str, Any]:
        result = await self._call("/embeddings", request)
        assert isinstance(result, dict)
        return result

    async def _call(self, path: str, request: BaseModel) -> dict[str, Any] | AsyncIterator[dict[str, Any]]:
        payload = request.model_dump(exclude_none=True)
        response = await self._send("POST", path, payload)
        if not payload.get("stream"):
            async with response:
                try:
                    return orjson.loads(await response.read())
                except orjson.JSONDecodeError:
                    raise UpstreamError(self.provider_id, f"answered {path} with something that is not JSON") from None
                except TimeoutError:
                    raise self._timeout(path) from None
                except aiohttp.ClientError as exc:
                    raise UpstreamError(self.provider_id, f"connection broke while answering {path}: {exc}") from None
        return self._relay(response, path)

    async def _send(self, method: str, path: str, payload: dict[str, Any] | None) -> aiohttp.ClientResponse:
        """Send, retrying connection errors, 429 and 5xx: safe because nothing has reached the client yet."""
        url = self.base_url + path
        body = None if payload is None else orjson.dumps(payload)
        for attempt in range(self.config.max_retries + 1):
            last = attempt == self.config.max_retries
            try:
                response = await self.session.request(method, url, data=body)
            except TimeoutError:
                if last:
                    raise self._timeout(path) from None
                await asyncio.sleep(self._backoff(attempt, None))
                continue
            except aiohttp.ClientError as exc:
                if last:
                    raise UpstreamError(
                        self.provider_id, f"cannot reach {self.base_url} ({exc.__class__.__name__}: {exc})", status=503
                    ) from None
                await asyncio.sleep(self._backoff(attempt, None))
                continue
            if response.status < 400:
                return response
            if response.status in RETRY_STATUSES and not last:
                delay = self._backoff(attempt, response.headers.get("Retry-After"))
                response.release()
                await asyncio.sleep(delay)
                continue
            raise await self._upstream_error(response, path)
        raise AssertionError("unreachable")

    def _backoff(self, attempt: int, retry_after: str | None) -> float:
        if retry_after is not None:
            try:
                return min(float(retry_after), 30.0)
            except ValueError:
                pass
        return self.config.retry_backoff * 2**attempt * (0.5 + random.random())

    def _timeout(self, path: str) -> UpstreamError:
        return UpstreamError(
            self.provider_id,
            f"{self.base_url}{path} did not answer within the configured timeouts "
            f"(connect {self.config.connect_timeout}s, read {self.config.read_timeout}s)",
            status=504,
            code="upstream_timeout",
        )

    async def _upstream_error(self, response: aiohttp.ClientResponse, path: str) -> LaminaError:
        async with response:
            text = await response.text(errors="replace")
        try:
            error = json.loads(text)["error"]
        except (ValueError, KeyError, TypeError):
            error = text[:500]
        if not isinstance(error, dict):
            error = {"message": str(error)}
        message = error.get("message") or ""
        status = response.status
        if status in (401, 403):
            return UpstreamError(
                self.provider_id, f"rejected our credentials ({status}: {message}); check its api_key", status=502
            )
        if status == 429:
            return LaminaError(
                f"provider '{self.provider_id}' is rate limited: {message}",
                status=429,
                type="rate_limit_error",
                code="rate_limit_exceeded",
            )
        if 400 <= status < 500:
            # The upstream judged the request itself: pass its verdict on, saying who gave it.
            return LaminaError(
                f"provider '{self.provider_id}': {message}",
                status=status,
                type=error.get("type") or "invalid_request_error",
                param=error.get("param"),
                code=error.get("code"),
            )
        return UpstreamError(self.provider_id, f"answered {path} with {status}: {message}", status=502)

    async def _relay(self, response: aiohttp.ClientResponse, path: str) -> AsyncIterator[dict[str, Any]]:
        """Yield each server-sent event as it arrives; closing early drops the upstream connection."""
        finished = False
        try:
            async for line in response.content:
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    continue  # read on to the end of the response, so the connection goes back to the pool
                event = orjson.loads(data)
                if "error" in event and "choices" not in event:
                    error = event["error"]
                    message = error.get("message", str(error)) if isinstance(error, dict) else str(error)
                    raise UpstreamError(self.provider_id, f"failed mid-stream: {message}")
                yield event
            finished = True
        except TimeoutError:
            raise self._timeout(path) from None
        except aiohttp.ClientError as exc:
            raise UpstreamError(self.provider_id, f"stream broke: {exc.__class__.__name__}") from None
        except orjson.JSONDecodeError:
            raise UpstreamError(self.provider_id, "sent a stream event that is not JSON") from None
        finally:
            if finished:
                response.release()
            else:
                # An unfinished stream is cut, not pooled, so the upstream stops generating.
                response.close()
