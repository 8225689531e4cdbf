"""The aiohttp side of remote::openai: one pooled session, safe retries within a deadline, streaming relay.

Timeouts: `connect_timeout` to open a connection, `first_byte_timeout` from sending a request to its answer's
headers, `read_timeout` for any pause between two bytes after that, and `deadline` over everything before the
answer starts (retries and their waits included). Each ends in a 504 naming the provider.

Retries: only what the upstream cannot have acted on: connections that could not be opened, and answers that
say so (429 and 503; their `Retry-After` is honoured when it fits in the deadline). A request that reached the
upstream and got no answer (a timeout, a dropped connection, a 500) is never sent again: a chat completion is
not idempotent, and its cost is the user's.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import unquote, urlsplit

import aiohttp
import orjson
from lamina import LaminaError, UpstreamError, observe
from lamina.apis.inference.types import ChatCompletionRequest, CompletionRequest, EmbeddingRequest, ModelInfo
from lamina.config import REDACTED, SECRET_KEY, redact
from pydantic import BaseModel

from lamina_remote_openai import OpenAIConfig

RETRY_STATUSES = {429, 503}
EMBEDDING_HINTS = ("embed", "bge-", "e5-", "gte-", "minilm")


class OpenAIAdapter:
    def __init__(self, config: OpenAIConfig, provider_id: str) -> None:
        self.config = config
        self.provider_id = provider_id
        assert config.base_url is not None  # set from the preset by the config's validator
        self.base_url: str = config.base_url
        headers = {"Content-Type": "application/json", **config.headers}
        if config.api_key is not None and config.api_key.get_secret_value():
            headers["Authorization"] = f"Bearer {config.api_key.get_secret_value()}"
        self.secrets = _secrets(config)
        self.shown_url = redact(self.base_url)
        self.session = aiohttp.ClientSession(
            headers=headers,
            connector=aiohttp.TCPConnector(limit=config.max_connections, ttl_dns_cache=300),
            cookie_jar=aiohttp.DummyCookieJar(),  # an API client keeps no cookies; skipping the jar saves CPU
            # Reads are timed here, not by aiohttp: its sock_read would also time the wait for the first byte.
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=config.connect_timeout, sock_read=None),
        )

    async def close(self) -> None:
        await self.session.close()

    def scrub(self, text: str) -> str:
        """`text` from the upstream (or about it) with every configured secret masked: upstreams echo keys back."""
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        return text

    async def list_models(self) -> list[ModelInfo]:
        ids = self.config.models
        if ids is None:
            try:
                async with asyncio.timeout(self.config.discovery_timeout):
                    async with await self._send("GET", "/models", None, idempotent=True) as response:
                        ids = [item["id"] for item in orjson.loads(await response.read())["data"]]
            except TimeoutError:
                raise UpstreamError(
                    self.provider_id,
                    f"{self.shown_url}/models did not answer within discovery_timeout "
                    f"({self.config.discovery_timeout:g}s)",
                    status=504,
                    code="upstream_timeout",
                ) from None
            except (orjson.JSONDecodeError, KeyError, TypeError):
                raise UpstreamError(
                    self.provider_id, "answered /models with something that is not a model list"
                ) from None
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
        deadline = time.monotonic() + self.config.deadline
        response = await self._send("POST", path, payload, deadline=deadline)
        if not payload.get("stream"):
            async with response:
                try:
                    async with asyncio.timeout(self.config.read_timeout):
                        return orjson.loads(await response.read())
                except orjson.JSONDecodeError:
                    raise UpstreamError(self.provider_id, f"answered {path} with something that is not JSON") from None
                except TimeoutError:
                    raise self._timeout(path) from None
                except aiohttp.ClientError as exc:
                    raise UpstreamError(
                        self.provider_id, self.scrub(f"connection broke while answering {path}: {exc}")
                    ) from None
        return self._relay(response, path)

    async def _send(
        self,
        method: str,
        path: str,
        payload: dict[str, Any] | None,
        *,
        idempotent: bool = False,
        deadline: float | None = None,
    ) -> aiohttp.ClientResponse:
        """Send; retry only what the upstream did not act on (see the module's doc), within the deadline."""
        url = self.base_url + path
        body = None if payload is None else orjson.dumps(payload)
        deadline = deadline if deadline is not None else time.monotonic() + self.config.deadline
        for attempt in range(self.config.max_retries + 1):
            last = attempt == self.config.max_retries
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._timeout(path)
            headers: dict[str, str] = {}  # an observer's traceparent for this attempt's span
            try:
                async with asyncio.timeout(min(remaining, self.config.first_byte_timeout)):
                    with observe.outbound(method, url, headers) as answered:
                        response = await self.session.request(method, url, data=body, headers=headers or None)
                        answered(response.status)
            except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
                # Never connected: the upstream has not seen the request, so sending it again is safe.
                if last or not await self._wait(self._backoff(attempt, None), deadline):
                    if isinstance(exc, aiohttp.ConnectionTimeoutError):
                        raise self._timeout(path) from None
                    raise UpstreamError(
                        self.provider_id,
                        self.scrub(f"cannot reach {self.shown_url} ({exc.__class__.__name__}: {exc})"),
                        status=503,
                    ) from None
                continue
            except TimeoutError:
                raise self._timeout(path) from None
            except aiohttp.ServerDisconnectedError as exc:
                if idempotent and not last and await self._wait(self._backoff(attempt, None), deadline):
                    continue
                raise UpstreamError(
                    self.provider_id,
                    self.scrub(f"{self.shown_url} closed the connection without answering ({exc.__class__.__name__})"),
                    status=503,
                ) from None
            except aiohttp.ClientError as exc:
                raise UpstreamError(
                    self.provider_id,
                    self.scrub(f"request to {self.shown_url} failed ({exc.__class__.__name__}: {exc})"),
                ) from None
            if response.status < 400:
                return response
            if response.status in RETRY_STATUSES and not last:
                delay = self._backoff(attempt, response.headers.get("Retry-After"))
                if await self._wait(delay, deadline):
                    response.release()
                    continue
            raise await self._upstream_error(response, path)
        raise AssertionError("unreachable")

    @staticmethod
    async def _wait(delay: float, deadline: float) -> bool:
        """Sleep `delay` seconds, unless that would pass the deadline (then False, at once)."""
        if time.monotonic() + delay >= deadline:
            return False
        await asyncio.sleep(delay)
        return True

    def _backoff(self, attempt: int, retry_after: str | None) -> float:
        """The wait before retry `attempt + 1`: the upstream's `Retry-After` in seconds (the deadline decides
        whether it is worth waiting), else exponential with jitter."""
        if retry_after is not None:
            try:
                return max(float(retry_after), 0.0)
            except ValueError:
                pass  # an HTTP date, or garbage
        return self.config.retry_backoff * 2**attempt * (0.5 + random.random())

    def _timeout(self, path: str) -> UpstreamError:
        config = self.config
        return UpstreamError(
            self.provider_id,
            f"{self.shown_url}{path} did not answer within the configured timeouts (connect "
            f"{config.connect_timeout:g}s, first byte {config.first_byte_timeout:g}s, between bytes "
            f"{config.read_timeout:g}s, deadline {config.deadline:g}s)",
            status=504,
            code="upstream_timeout",
        )

    async def _upstream_error(self, response: aiohttp.ClientResponse, path: str) -> LaminaError:
        async with response:
            try:
                async with asyncio.timeout(self.config.read_timeout):
                    text = await response.text(errors="replace")
            except (TimeoutError, aiohttp.ClientError):
                text = ""
        try:
            error = json.loads(text)["error"]
        except (ValueError, KeyError, TypeError):
            error = text[:500]
        if not isinstance(error, dict):
            error = {"message": str(error)}
        message = self.scrub(str(error.get("message") or ""))
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
                type=_text(error.get("type")) or "invalid_request_error",
                param=_text(error.get("param")),
                code=_text(error.get("code")),
            )
        if status == 503:
            return UpstreamError(self.provider_id, f"is unavailable (503 on {path}): {message}", status=503)
        return UpstreamError(self.provider_id, f"answered {path} with {status}: {message}", status=502)

    async def _relay(self, response: aiohttp.ClientResponse, path: str) -> AsyncIterator[dict[str, Any]]:
        """Yield each server-sent event as it arrives; closing early drops the upstream connection."""
        finished = False
        content, pause = response.content, self.config.read_timeout
        try:
            while True:
                async with asyncio.timeout(pause):
                    line = await content.readline()
                if not line:
                    break
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    continue  # read on to the end of the response, so the connection goes back to the pool
                event = orjson.loads(data)
                if "error" in event and "choices" not in event:
                    error = event["error"]
                    message = error.get("message", str(error)) if isinstance(error, dict) else str(error)
                    raise UpstreamError(self.provider_id, f"failed mid-stream: {self.scrub(str(message))}")
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


def _secrets(config: OpenAIConfig) -> list[str]:
    """Every configured value an upstream might echo back: the key, secret-looking headers, the URL's password."""
    found = []
    if config.api_key is not None:
        found.append(config.api_key.get_secret_value())
    found += [value for name, value in config.headers.items() if SECRET_KEY.search(name)]
    password = urlsplit(config.base_url or "").password
    if password:
        found += [password, unquote(password)]
    # Longest first, so a secret containing another is masked whole; short values would mask ordinary words.
    return sorted({s for s in found if len(s) >= 4}, key=len, reverse=True)


def _text(value: Any) -> str | None:
    """OpenAI's error fields are strings: some upstreams send numbers (`"code": 404`)."""
    return None if value is None else str(value)
