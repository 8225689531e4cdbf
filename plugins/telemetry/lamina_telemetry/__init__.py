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
    # Traces go to an OTLP/HTTP (protobuf) endpoint: this, else OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (the full URL),
    # else OTEL_EXPORTER_OTLP_ENDPOINT + /v1/traces. None of them set: no traces.
    otlp_endpoint: str | None = None
    otlp_headers: dict[str, str] = {}  # else OTEL_EXPORTER_OTLP_HEADERS
    service_name: str | None = None  # else OTEL_SERVICE_NAME, else "lamina"
    # Share of new traces sampled (a request with a sampled `traceparent` is always followed); else
    # OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG, else 1.0.
    sampling_ratio: float | None = Field(None, ge=0, le=1)
    export_interval_seconds: float = Field(15, gt=0)  # how often metrics are pushed over OTLP, when traces are


def settings_of(config: RunConfig) -> TelemetryConfig:
    try:
        return TelemetryConfig.model_validate(config.telemetry)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ConfigError(f"{config.source}: telemetry.{where}: {first['msg']}") from None


def traces_endpoint(settings: TelemetryConfig) -> str | None:
    if os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
        return None
    if settings.otlp_endpoint:
        return settings.otlp_endpoint.rstrip("/") + "/v1/traces"
    if url := os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        return url
    if base := os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return base.rstrip("/") + "/v1/traces"
    return None


@hookimpl
def observer(config: RunConfig) -> Observer | None:
    settings = settings_of(config)
    if not settings.enabled or os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    endpoint = traces_endpoint(settings)
    if endpoint is None and not settings.metrics:
        return None
    from lamina_telemetry.telemetry import Telemetry  # not `.observer`: that would shadow this hook

    return Telemetry(settings, endpoint)


@hookimpl
def asgi_wrapper(stack: Stack) -> Callable[[ASGIApp], ASGIApp] | None:
    telemetry: Any = current()
    # The observer this plugin installed (a module name rather than isinstance: importing the class is heavy).
    from_us = type(telemetry).__module__ == "lamina_telemetry.telemetry"
    return telemetry.asgi_wrapper if from_us else None
