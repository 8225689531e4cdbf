"""lamina-telemetry: OpenTelemetry traces exported over OTLP/HTTP and Prometheus metrics on `/metrics`.

Light on import (pydantic and lamina only): OpenTelemetry and prometheus_client are imported when a stack starts
with telemetry on. Switched by the run config's `telemetry:` section and the standard OTEL_* variables.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from lamina.config import ConfigError, RunConfig
from lamina.hookspecs import hookimpl
from lamina.observe import Observer, current
from pydantic import BaseModel, ConfigDict, Field, ValidationError

if TYPE_CHECKING:
    from lamina.resolver import Stack
    from starlette.types import ASGIApp


class TelemetryConfig(BaseModel):
    """The run config's `telemetry:` section. Unset fields fall back to the standard OTEL_* variables."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True  # false (or OTEL_SDK_DISABLED=true): nothing is installed, nothing is measured
    metrics: bool = True  # Prometheus metrics on `metrics_path`
    metrics_path: str = "/metrics"
    # Traces and metrics go to an OTLP/HTTP (protobuf) endpoint: this + /v1/traces (/v1/metrics), else
    # OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (..._METRICS_ENDPOINT, full URLs), else OTEL_EXPORTER_OTLP_ENDPOINT +
    # /v1/traces (/v1/metrics). None set: no export (and no tracing at all); /metrics still answers.
    otlp_endpoint: str | None = None
    otlp_headers: dict[str, str] = {}  # else OTEL_EXPORTER_OTLP_HEADERS
    service_name: str | None = None  # else OTEL_SERVICE_NAME, else "lamina"
    # Share of new traces sampled (a request with a sampled `traceparent` is always followed); else
    # OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG, else 1.0.
    sampling_ratio: float | None = Field(None, ge=0, le=1)
    # How often metrics are pushed over OTLP; else OTEL_METRIC_EXPORT_INTERVAL (milliseconds), else 60 s.
    export_interval_seconds: float | None = Field(None, gt=0)


def settings_of(config: RunConfig) -> TelemetryConfig:
    try:
        return TelemetryConfig.model_validate(config.telemetry)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ConfigError(f"{config.source}: telemetry.{where}: {first['msg']}") from None


def otlp_endpoint(settings: TelemetryConfig, signal: str) -> str | None:
    """Where to send `signal` ("traces" or "metrics") over OTLP/HTTP, the standard variables' way; None: nowhere."""
    if os.environ.get(f"OTEL_{signal.upper()}_EXPORTER", "otlp").strip().lower() == "none":
        return None
    if settings.otlp_endpoint:
        return f"{settings.otlp_endpoint.rstrip('/')}/v1/{signal}"
    if url := os.environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT"):
        return url
    if base := os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return f"{base.rstrip('/')}/v1/{signal}"
    return None


@hookimpl
def observer(config: RunConfig) -> Observer | None:
    settings = settings_of(config)
    if not settings.enabled or os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    traces = otlp_endpoint(settings, "traces")
    if traces is None and not settings.metrics:
        return None
    from lamina_telemetry.telemetry import Telemetry  # not `.observer`: that would shadow this hook

    telemetry = Telemetry(settings, traces, otlp_endpoint(settings, "metrics") if settings.metrics else None)
    telemetry.config = config  # which stack it observes: see asgi_wrapper
    return telemetry


@hookimpl
def asgi_wrapper(stack: Stack) -> Callable[[ASGIApp], ASGIApp] | None:
    telemetry: Any = current()
    # The observer this plugin installed for this stack (another stack in the process, a test's, may have its own
    # still installed); the module's name rather than isinstance: importing the class is heavy.
    ours = type(telemetry).__module__ == "lamina_telemetry.telemetry" and telemetry.config is stack.config
    return telemetry.asgi_wrapper if ours else None
