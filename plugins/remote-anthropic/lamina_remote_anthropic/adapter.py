"""The aiohttp side of remote::anthropic: one pooled session, retries before the first byte, streaming relay.

Requests and answers are translated by `lamina_anthropic_messages.translate`, the same mapping /v1/messages uses
the other way round.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
from lamina import LaminaError, UpstreamError, bad_request, observe
from lamina.apis.inference.types import ChatCompletionRequest, CompletionRequest, EmbeddingRequest, ModelInfo
from lamina.config import REDACTED
from lamina_anthropic_messages import translate

from lamina_remote_anthropic import AnthropicConfig

RETRY_STATUSES = {429, 500, 502, 503, 504, 529}
COUNTED_FIELDS = ("model", "messages", "system", "tools", "tool_choice", "output_config")  # what count_tokens takes


class AnthropicAdapter:
    def __init__(self, config: AnthropicConfig, provider_id: str) -> None:
        self.config = config
        self.provider_id = provider_id
        headers = {"Content-Type": "application/json", "anthropic-version": config.anthropic_version, **config.headers}
        if config.api_key is not None and config.api_key.get_secret_value():
            headers["x-api-key"] = config.api_key.get_secret_value()
        self.secrets = [headers["x-api-key"]] if "x-api-key" in headers else []
        self.session = aiohttp.ClientSession(
            headers=headers,
            connector=aiohttp.TCPConnector(limit=config.max_connections, ttl_dns_cache=300),
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=config.connect_timeout, sock_read=config.read_timeout
            ),
        )

    def scrub(self, text: str) -> str:
        """`text` from the upstream with the configured key masked: upstreams echo keys back in their errors."""
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        return text

    async def close(self) -> None:
        await self.session.close()

    async def list_models(self) -> list[ModelInfo]:
        if self.config.models is not None:
            return [ModelInfo(id=model_id) for model_id in self.config.models]
        ids: list[str] = []
        path = "/v1/models?limit=1000"
        while True:
            async with await self._send("GET", path, None) as response:
                page = orjson.loads(await response.read())
            ids += [item["id"] for item in page["data"]]
            if not page.get("has_more") or not page.get("last_id"):
                return [ModelInfo(id=model_id) for model_id in ids]
            path = f"/v1/models?limit=1000&after_id={page['last_id']}"

    async def chat_completion(self, request: ChatCompletionRequest) -> dict[str, Any] | AsyncIterator[dict[str, Any]]:
        chat = request.model_dump(exclude_none=True)
        payload = translate.anthropic_request(chat, self.config.default_max_tokens)
        response = await self._send("POST", "/v1/messages", payload)
        if not payload.get("stream"):
            async with response:
                try:
                    return translate.chat_completion(orjson.loads(await response.read()))
                except orjson.JSONDecodeError:
                    raise UpstreamError(
                        self.provider_id, "answered /v1/messages with something that is not JSON"
                    ) from None
                except TimeoutError:
                    raise self._timeout() from None
                except aiohttp.ClientError as exc:
                    raise UpstreamError(self.provider_id, f"connection broke while answering: {exc}") from None
        include_usage = bool((chat.get("stream_options") or {}).get("include_usage"))
        return translate.chat_chunks(self._events(response), include_usage)

    async def count_chat_tokens(self, request: ChatCompletionRequest) -> int:
        """The prompt's tokens as Anthropic counts them (its counting endpoint: no generation, no cost), for
        /v1/messages/count_tokens."""
        full = translate.anthropic_request(request.model_dump(exclude_none=True), self.config.default_max_tokens)
        payload = {key: full[key] for key in COUNTED_FIELDS if key in full}
        async with await self._send("POST", "/v1/messages/count_tokens", payload) as response:
            try:
                counted = orjson.loads(await response.read())["input_tokens"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                raise UpstreamError(self.provider_id, "answered count_tokens without input_tokens") from None
        if not isinstance(counted, int):
            raise UpstreamError(self.provider_id, "answered count_tokens without input_tokens")
        return counted

    async def completion(self, request: CompletionRequest) -> dict[str, Any]:
        raise bad_request(
            f"model '{request.model}' is served by Anthropic's Messages API, which has no text completions; "
            "use /v1/chat/completions",
            param="model",
        )

    async def embeddings(self, request: EmbeddingRequest) -> dict[str, Any]:
        raise bad_request(f"model '{request.model}' is served by Anthropic, which has no embeddings", param="model")

    async def _send(self, method: str, path: str, payload: dict[str, Any] | None) -> aiohttp.ClientResponse:
        """Send, retrying connection errors, 429, 5xx and 529: safe because nothing has reached the client yet."""
        url = self.config.base_url + path
        body = None if payload is None else orjson.dumps(payload)
        for attempt in range(self.config.max_retries + 1):
            last = attempt == self.config.max_retries
            headers: dict[str, str] = {}  # an observer's traceparent for this attempt's span
            try:
                with observe.outbound(method, url, headers) as answered:
                    response = await self.session.request(method, url, data=body, headers=headers or None)
                    answered(response.status)
            except TimeoutError:
                if last:
                    raise self._timeout() from None
                await asyncio.sleep(self._backoff(attempt, None))
                continue
            except aiohttp.ClientError as exc:
                if last:
                    raise UpstreamError(
                        self.provider_id,
                        f"cannot reach {self.config.base_url} ({exc.__class__.__name__}: {exc})",
                        status=503,
                    ) from None
                await asyncio.sleep(self._backoff(attempt, None))
                continue
            if response.status < 400:
                return response
            if response.status in RETRY_STATUSES and not last:
                delay = self._backoff(attempt, response.headers.get("retry-after"))
                response.release()
                await asyncio.sleep(delay)
                continue
            raise await self._upstream_error(response)
        raise AssertionError("unreachable")

    def _backoff(self, attempt: int, retry_after: str | None) -> float:
        if retry_after is not None:
            try:
                return min(float(retry_after), 30.0)
            except ValueError:
                pass
        return self.config.retry_backoff * 2**attempt * (0.5 + random.random())

    def _timeout(self) -> UpstreamError:
        return UpstreamError(
            self.provider_id,
            f"{self.config.base_url} did not answer within the configured timeouts "
            f"(connect {self.config.connect_timeout}s, read {self.config.read_timeout}s)",
            status=504,
            code="upstream_timeout",
        )

    async def _upstream_error(self, response: aiohttp.ClientResponse) -> LaminaError:
        async with response:
            text = await response.text(errors="replace")
        try:
            error = json.loads(text)["error"]
        except (ValueError, KeyError, TypeError):
            error = {"message": text[:500]}
        if not isinstance(error, dict):
            error = {"message": str(error)}
        message, kind, status = self.scrub(str(error.get("message") or "")), error.get("type"), response.status
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
        if status == 529:
            return UpstreamError(self.provider_id, f"is overloaded: {message}", status=503, code="upstream_overloaded")
        if 400 <= status < 500:
            # Anthropic judged the request itself: pass its verdict on, saying who gave it.
            return LaminaError(
                f"provider '{self.provider_id}': {message}", status=status, type=kind or "invalid_request_error"
            )
        return UpstreamError(self.provider_id, f"answered with {status}: {message}", status=502)

    async def _events(self, response: aiohttp.ClientResponse) -> AsyncIterator[dict[str, Any]]:
        """Anthropic's stream events as they arrive (pings dropped); closing early drops the upstream connection."""
        finished = False
        try:
            async for line in response.content:
                if not line.startswith(b"data:"):
                    continue  # `event:` lines repeat the data's `type`
                event = orjson.loads(line[5:].strip())
                if event.get("type") == "error":
                    error = event.get("error") or {}
                    message = self.scrub(error.get("message", str(error)) if isinstance(error, dict) else str(error))
                    status = 503 if isinstance(error, dict) and error.get("type") == "overloaded_error" else 502
                    raise UpstreamError(self.provider_id, f"failed mid-stream: {message}", status=status)
                if event.get("type") != "ping":
                    yield event
            finished = True
        except TimeoutError:
            raise self._timeout() from None
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
