"""Filters, rank fusion and pagination, shared by the router and by providers that want them."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from lamina.apis.vector_io.provider import Hit
from lamina.apis.vector_io.types import Comparison, Compound, PageQuery
from lamina.errors import not_found

RRF_K = 60  # reciprocal-rank fusion constant (Cormack et al. 2009)


def hybrid_depth(k: int) -> int:
    """How deep each ranking is taken before fusion: deeper than k, so that a chunk second-best in both
    rankings can still make the fused top k."""
    return max(4 * k, 40)


def matches(condition: Comparison | Compound | None, attributes: dict[str, Any]) -> bool:
    if condition is None:
        return True
    if isinstance(condition, Compound):
        results = (matches(sub, attributes) for sub in condition.filters)
        return all(results) if condition.type == "and" else any(results)
    present = condition.key in attributes
    actual, wanted, kind = attributes.get(condition.key), condition.value, condition.type
    if kind == "ne":
        return not present or actual != wanted
    if kind == "nin":
        return not present or actual not in wanted  # type: ignore[operator]
    if not present:
        return False
    if kind == "eq":
        return actual == wanted
    if kind == "in":
        return actual in wanted  # type: ignore[operator]
    numeric = (int, float)
    comparable = (isinstance(actual, numeric) and isinstance(wanted, numeric)) or (
        isinstance(actual, str) and isinstance(wanted, str)
    )
    if not comparable or isinstance(actual, bool) or isinstance(wanted, bool):
        return False
    return {"gt": actual > wanted, "gte": actual >= wanted, "lt": actual < wanted, "lte": actual <= wanted}[kind]  # type: ignore[operator]


def no_match(hit: Hit) -> bool:
    """A hit that does not match the query at all: a vector not similar to it (cosine <= 0), a text sharing no
    term with it. It is no search result, however few others there are."""
    return hit.score <= 0


def fuse(rankings: list[list[Hit]]) -> list[Hit]:
    """Reciprocal-rank fusion, normalised so a chunk first in every ranking scores 1.0. A hit that does not match
    in a ranking (`no_match`) takes no rank in it: a chunk matching in no ranking is not in the fused one."""
    scores: dict[str, float] = {}
    hits: dict[str, Hit] = {}
    for ranking in rankings:
        for rank, hit in enumerate((hit for hit in ranking if not no_match(hit)), start=1):
            scores[hit.id] = scores.get(hit.id, 0.0) + 1.0 / (RRF_K + rank)
            hits.setdefault(hit.id, hit)
    best = len(rankings) / (RRF_K + 1)
    fused = [hits[i].model_copy(update={"score": score / best}) for i, score in scores.items()]
    return sorted(fused, key=lambda hit: -hit.score)


def new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(12)


class Listed(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def order(self) -> int: ...


def paginate(records: Sequence[Listed], query: PageQuery, view: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
    ordered = sorted(records, key=lambda r: r.order, reverse=query.order == "desc")
    ids = [r.id for r in ordered]
    for cursor, name in ((query.after, "after"), (query.before, "before")):
        if cursor is not None and cursor not in ids:
            raise not_found(f"'{cursor}' (the `{name}` cursor) not found", param=name)
    if query.after is not None:
        ordered = ordered[ids.index(query.after) + 1 :]
    if query.before is not None:
        ordered = ordered[: [r.id for r in ordered].index(query.before)]
        ordered = ordered[-query.limit :] if len(ordered) > query.limit else ordered
    page = ordered[: query.limit]
    data = [view(r) for r in page]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": len(ordered) > query.limit,
    }
