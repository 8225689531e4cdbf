"""Counters and broadcasts shared by replicas through Redis, for plugins (no hooks of its own yet).

Entry-point module: importing it imports only lamina; `redis` is imported when `Shared` is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lamina_redis.shared import Shared

__all__ = ["Shared"]


def __getattr__(name: str) -> Any:
    if name == "Shared":
        from lamina_redis.shared import Shared

        return Shared
    raise AttributeError(name)
