"""Access policies decide as Llama Stack's do: first matching rule wins, `unless` inverts, no match denies."""

from __future__ import annotations

import pytest
from lamina.access import AccessRule, Owner, Principal, is_allowed
from pydantic import ValidationError

ALICE = Principal("alice", {"teams": ["ml"], "roles": ["dev"]})
BOB = Principal("bob", {"teams": ["web"]})
CAROL = Principal("carol", {"teams": ["ml", "web"], "roles": ["admin"]})
ALICES = Owner(principal="alice", attributes={"teams": ["ml"]})


def rules(*raw: dict) -> list[AccessRule]:
    return [AccessRule.model_validate(rule) for rule in raw]


def test_the_default_policy_is_ownership_and_public_unowned() -> None:
    for action in ("create", "read", "update", "delete"):
        assert is_allowed([], ALICE, action, "file", "f1", ALICES)
        assert not is_allowed([], BOB, action, "file", "f1", ALICES)
    assert is_allowed([], BOB, "read", "model", "chat", None)
    assert not is_allowed([], BOB, "delete", "model", "chat", None)


def test_conditions() -> None:
    team = rules({"permit": {"actions": ["read"]}, "when": "user in owners teams"})
    assert is_allowed(team, CAROL, "read", "file", "f1", ALICES)
    assert not is_allowed(team, BOB, "read", "file", "f1", ALICES)
    assert not is_allowed(team, CAROL, "read", "file", "f1", None)  # an unowned object has no teams to share
    not_team = rules({"permit": {"actions": ["read"]}, "when": "user not in owners teams"})
    assert is_allowed(not_team, BOB, "read", "file", "f1", ALICES)
    admins = rules({"permit": {"actions": ["delete"]}, "when": ["user with admin in roles", "user is not owner"]})
    assert is_allowed(admins, CAROL, "delete", "file", "f1", ALICES)
    assert not is_allowed(admins, ALICE, "delete", "file", "f1", ALICES)
    owned = rules({"permit": {"actions": ["update"]}, "when": "resource is owned by user"})
    assert is_allowed(owned, ALICE, "update", "file", "f1", ALICES)
    no_admin = rules({"permit": {"actions": ["read"]}, "when": "user with admin not in roles"})
    assert is_allowed(no_admin, ALICE, "read", "x", "y", None) and not is_allowed(
        no_admin, CAROL, "read", "x", "y", None
    )


def test_first_match_wins_unless_inverts_and_no_match_denies() -> None:
    policy = rules(
        {"forbid": {"actions": ["delete"], "resource": "vector_store::*"}, "unless": "user with admin in roles"},
        {"permit": {"actions": ["read", "delete"]}},
    )
    assert not is_allowed(policy, ALICE, "delete", "vector_store", "vs_1", ALICES)
    assert is_allowed(policy, CAROL, "delete", "vector_store", "vs_1", ALICES)  # unless holds: the forbid is skipped
    assert is_allowed(policy, ALICE, "delete", "file", "f1", ALICES)  # another type: the forbid does not apply
    assert not is_allowed(policy, ALICE, "update", "file", "f1", ALICES)  # no rule matches
    named = rules({"permit": {"principal": "bob", "actions": ["read"], "resource": "model::chat"}})
    assert is_allowed(named, BOB, "read", "model", "chat", ALICES)
    assert not is_allowed(named, BOB, "read", "model", "chat-2", ALICES)
    assert not is_allowed(named, ALICE, "read", "model", "chat", ALICES)


@pytest.mark.parametrize(
    "rule",
    [
        {"permit": {"actions": ["read"]}, "forbid": {"actions": ["read"]}},
        {"when": "user is owner"},
        {"permit": {"actions": ["read"]}, "when": "user is owner", "unless": "user is owner"},
        {"permit": {"actions": ["read"]}, "when": "user owns everything"},
        {"permit": {"actions": ["look"]}},
    ],
)
def test_malformed_rules_are_refused(rule: dict) -> None:
    with pytest.raises(ValidationError):
        AccessRule.model_validate(rule)
