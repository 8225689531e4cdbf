"""OpenAI-shaped errors. Raise `LaminaError` anywhere; the server turns it into the right response."""

from __future__ import annotations

import re
from typing import Any


class LaminaError(Exception):
    """An error a client should see: an HTTP status and OpenAI's `{"error": {...}}` body."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.type = type
        self.param = param
        self.code = code
        self.headers: dict[str, str] | None = (
            None  # sent with the error (a 429's Retry-After, a 401's WWW-Authenticate)
        )

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad_request(message: str, *, param: str | None = None, code: str | None = None) -> LaminaError:
    return LaminaError(message, status=400, param=param, code=code)


def not_found(message: str, *, param: str | None = None, code: str = "not_found") -> LaminaError:
    return LaminaError(message, status=404, type="not_found_error", param=param, code=code)


def conflict(message: str, *, param: str | None = None) -> LaminaError:
    return LaminaError(message, status=409, type="invalid_request_error", param=param, code="conflict")


class UpstreamError(LaminaError):
    """A provider's upstream failed: 502 (bad answer), 503 (unreachable or overloaded), 504 (timeout)."""

    def __init__(self, provider_id: str, message: str, *, status: int = 502, code: str = "upstream_error") -> None:
        super().__init__(f"provider '{provider_id}': {message}", status=status, type="upstream_error", code=code)
        self.provider_id = provider_id


class StorageUnavailable(LaminaError):
    """A store the stack keeps state in (a database, an object store) cannot be reached: 503 naming the store, so
    a load balancer retries elsewhere and an operator knows what to fix. Raised by storage backends and providers
    whose state lives in a service."""

    def __init__(self, store: str, message: str) -> None:
        super().__init__(
            f"storage '{store}' is unavailable: {message}", status=503, type="server_error", code="storage_unavailable"
        )
        self.store = store


# pydantic names the member of a union it tried inside an error's location (`query.list[str]`,
# `filters.Compound.type`, `filters.function-after[...]`): not part of the field's path a client sent.
UNION_MEMBER = re.compile(r"[\[(]|^(str|int|float|bool|list|dict|none|constrained-\w+|[A-Z][A-Za-z0-9]*)$")


def validation_error(exc: Any) -> LaminaError:
    """Turn a pydantic ValidationError into a 400 naming the first bad field."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    # A value that fits no member of a union fails each: the member whose own check failed (not "wrong type")
    # says most about what was meant.
    same_field = [e for e in errors if e["loc"][:1] == first["loc"][:1]]
    first = next((e for e in same_field if not e["type"].endswith("_type")), first)
    path = [part for part in first["loc"] if not (isinstance(part, str) and UNION_MEMBER.search(part))]
    param = ".".join(str(part) for part in path) or None
    message = first["msg"] if param is None else f"{param}: {first['msg']}"
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more error(s))"
    return bad_request(
        message, param=param, code="invalid_value" if first["type"] != "missing" else "missing_required_parameter"
    )
