"""The seam between routers and provider instances: every provider the resolver starts is handed to its router
behind a `ProviderProxy`, so that a provider failing inside a request is reported (once, in the log and in the
500's body) as that provider's failure, naming its id, type and package, instead of as an anonymous error in core.

It is also the one place to observe provider calls: the proxy notes the provider, model and token counts of the
request being served (`lamina.observe`), and an installed observer may wrap the instance first (tracing).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from lamina import observe
from lamina.errors import LaminaError
from lamina.specs import ProviderSpec

log = logging.getLogger("lamina")


class ProviderFailed(LaminaError):
    """A provider raised something other than a LaminaError, or answered with something malformed."""

    def __init__(self, label: str, message: str) -> None:
        super().__init__(f"{label} {message}", status=500, type="server_error", code="provider_error")


def describe(provider_id: str, spec: ProviderSpec) -> str:
    package = f" from {spec.package} {spec.version}" if spec.package else ""
    return f"provider '{provider_id}' ({spec.type}{package})"


def label_of(provider: Any) -> str:
    return getattr(provider, "lamina_label", None) or f"provider {type(provider).__name__}"


def malformed(provider: Any, expected: str, value: Any) -> ProviderFailed:
    shown = repr(value)
    shown = shown if len(shown) <= 200 else shown[:200] + "..."
    error = ProviderFailed(label_of(provider), f"returned {expected}: got {type(value).__name__} {shown}")
    log.error("%s", error.message)
    return error


def failed(label: str, exc: BaseException) -> ProviderFailed:
    error = ProviderFailed(label, f"failed: {type(exc).__name__}: {exc}")
    log.error("%s", error.message, exc_info=exc)  # the one record of it, with its traceback
    return error


class ProviderProxy:
    """A provider as its router sees it: the same attributes, with every async method's failures attributed."""

    def __init__(self, instance: Any, label: str, provider_id: str = "") -> None:
        self.instance = instance
        self.lamina_label = label
        self.provider_id = provider_id

    def __getattr__(self, name: str) -> Any:
        value = getattr(self.instance, name)
        if name.startswith("_"):
            return value
        if inspect.iscoroutinefunction(value):
            wrapped = _attributed(value, self.lamina_label, self.provider_id)
        elif inspect.isasyncgenfunction(value):
            wrapped = _attributed_generator(value, self.lamina_label, self.provider_id)
        else:
            return value
        self.__dict__[name] = wrapped  # later lookups skip __getattr__
        return wrapped


def _attributed(method: Callable[..., Any], label: str, provider_id: str) -> Callable[..., Any]:
    async def call(*args: Any, **kwargs: Any) -> Any:
        info = observe.current_request()
        if info is not None:
            info.provider = provider_id
        try:
            result = await method(*args, **kwargs)
        except LaminaError:
            raise
        except Exception as exc:
            raise failed(label, exc) from exc
        if type(result) is dict and info is not None:
            observe.note_usage(result)
        return _attributed_stream(result, label) if hasattr(result, "__anext__") else result

    call.__name__ = getattr(method, "__name__", "call")
    return call


def _attributed_generator(method: Callable[..., Any], label: str, provider_id: str) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        info = observe.current_request()
        if info is not None:
            info.provider = provider_id
        return _attributed_stream(method(*args, **kwargs), label)

    call.__name__ = getattr(method, "__name__", "call")
    return call


async def _attributed_stream(events: Any, label: str) -> AsyncIterator[Any]:
    try:
        async for event in events:
            if type(event) is dict and event.get("usage"):  # a stream's usage chunk (stream_options.include_usage)
                observe.note_usage(event)
            yield event
    except LaminaError:
        raise
    except Exception as exc:
        raise failed(label, exc) from exc
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()


def proxy(instance: Any, provider_id: str, spec: ProviderSpec) -> Any:
    return ProviderProxy(observe.wrap_provider(instance, provider_id, spec), describe(provider_id, spec), provider_id)
