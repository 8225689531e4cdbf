"""Who may do what to a stored object: principals, owners and access policies with Llama Stack's semantics.

A policy is a list of rules tried in order; the first whose scope matches (actions, optional principal, optional
resource `type::id` or `type::*`) and whose condition holds decides: `permit` allows, `forbid` denies. When no
rule matches, the action is denied. A rule's condition is `when` (every listed condition holds) or `unless`
(not every one holds). Conditions:

    user is owner / resource is owned by user        the caller is the object's owner
    user is not owner
    user in owners NAME                               the caller shares a value of attribute NAME with the owner
    user not in owners NAME
    user with VALUE in NAME                           the caller's attribute NAME contains VALUE
    user with VALUE not in NAME
    resource is unowned                               no owner: made by the run config, or before auth was on

Without a policy (the default) a caller may do anything to what it owns, and read what nobody owns.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, PrivateAttr, model_validator

Action = Literal["create", "read", "update", "delete"]
ACTIONS: tuple[Action, ...] = ("create", "read", "update", "delete")


class Owner(BaseModel):
    """Who made a stored object: the caller's principal and attributes at the time."""

    principal: str
    attributes: dict[str, list[str]] = {}


@dataclass(frozen=True)
class Principal:
    """An authenticated caller. `scopes` None means every API (but not `admin`); `key_id` names the API key (or
    the token's subject for other providers) for usage accounting and per-key limits."""

    principal: str
    attributes: Mapping[str, list[str]] = field(default_factory=dict)
    key_id: str | None = None
    scopes: tuple[str, ...] | None = None
    limits: Mapping[str, int] = field(default_factory=dict)  # per-key quota overrides (lamina.quotas names)
    provider: str = ""

    def owner(self) -> Owner:
        return Owner(principal=self.principal, attributes={k: list(v) for k, v in self.attributes.items()})

    @property
    def is_admin(self) -> bool:
        return (self.scopes is not None and "admin" in self.scopes) or "admin" in self.attributes.get("roles", [])


Condition = Callable[[Principal, "Owner | None"], bool]


def _in_owners(name: str) -> Condition:
    def holds(user: Principal, owner: Owner | None) -> bool:
        theirs = owner.attributes.get(name) if owner else None
        return bool(theirs) and any(value in user.attributes.get(name, []) for value in theirs or [])

    return holds


def _with_value(value: str, name: str) -> Condition:
    return lambda user, owner: value in user.attributes.get(name, [])


def _negate(condition: Condition) -> Condition:
    return lambda user, owner: not condition(user, owner)


def _is_owner(user: Principal, owner: Owner | None) -> bool:
    return owner is not None and owner.principal == user.principal


def parse_condition(text: str) -> Condition:
    match text.split():
        case ["user", "is", "owner"] | ["resource", "is", "owned", "by", "user"]:
            return _is_owner
        case ["user", "is", "not", "owner"] | ["resource", "is", "not", "owned", "by", "user"]:
            return _negate(_is_owner)
        case ["user", "in", "owners", name]:
            return _in_owners(name)
        case ["user", "not", "in", "owners", name]:
            return _negate(_in_owners(name))
        case ["user", "with", value, "in", name]:
            return _with_value(value, name)
        case ["user", "with", value, "not", "in", name]:
            return _negate(_with_value(value, name))
        case ["resource", "is", "unowned"]:
            return lambda user, owner: owner is None
    raise ValueError(f"unknown condition '{text}'; see docs/auth.md for the conditions a rule can use")


class Scope(BaseModel):
    model_config = ConfigDict(extra="forbid")

    actions: Action | list[Action]
    principal: str | None = None
    resource: str | None = None  # `type::id` or `type::*`; types: file, vector_store, model, shield, ...

    def matches(self, action: Action, user: Principal, resource: str) -> bool:
        actions = [self.actions] if isinstance(self.actions, str) else self.actions
        if action not in actions or (self.principal is not None and self.principal != user.principal):
            return False
        if self.resource is None or self.resource == resource:
            return True
        return self.resource.endswith("::*") and resource.startswith(self.resource[:-1])


class AccessRule(BaseModel):
    """One rule of `auth.access_policy`: exactly one of `permit` / `forbid`, at most one of `when` / `unless`."""

    model_config = ConfigDict(extra="forbid")

    permit: Scope | None = None
    forbid: Scope | None = None
    when: str | list[str] | None = None
    unless: str | list[str] | None = None
    description: str | None = None
    _conditions: list[Condition] = PrivateAttr(default_factory=list)

    @model_validator(mode="after")
    def _shape(self) -> AccessRule:
        if (self.permit is None) == (self.forbid is None):
            raise ValueError("a rule has exactly one of `permit` or `forbid`")
        if self.when is not None and self.unless is not None:
            raise ValueError("a rule has `when` or `unless`, not both")
        self._conditions = [parse_condition(text) for text in self._texts()]
        return self

    def _texts(self) -> list[str]:
        texts = self.when if self.when is not None else self.unless
        return [] if texts is None else [texts] if isinstance(texts, str) else list(texts)

    def decides(self, action: Action, user: Principal, resource: str, owner: Owner | None) -> bool | None:
        """True (permit) or False (forbid) when this rule applies, None when it does not."""
        scope = self.permit or self.forbid
        assert scope is not None
        if not scope.matches(action, user, resource):
            return None
        holds = all(condition(user, owner) for condition in self._conditions)
        if self.unless is not None:
            holds = not holds
        if not holds:
            return None
        return self.permit is not None


DEFAULT_POLICY = [
    AccessRule.model_validate({"permit": {"actions": list(ACTIONS)}, "when": "user is owner"}),
    AccessRule.model_validate({"permit": {"actions": ["read"]}, "when": "resource is unowned"}),
]


def is_allowed(
    policy: list[AccessRule], user: Principal, action: Action, kind: str, identifier: str, owner: Owner | None
) -> bool:
    resource = f"{kind}::{identifier}"
    for rule in policy or DEFAULT_POLICY:
        decision = rule.decides(action, user, resource, owner)
        if decision is not None:
            return decision
    return False
