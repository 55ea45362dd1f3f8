"""Users and API keys: the aggregate, and the account processor that is its one writer."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.markets import demo_markets
from domain.replay import Replayer
from domain.users import (
    MAX_API_KEYS,
    InvalidUser,
    UnknownApiKey,
    User,
    normal_email,
    permissions_text,
    user_account_id,
    user_id_for,
)
from infra import messages
from infra.event_records import header, stored_event
from infra.messages import Command, Outcome
from infra.serialization import EventMapper
from streams.local import LocalCluster

T0 = datetime(2026, 1, 1, tzinfo=UTC)


# -- the aggregate -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("Alice@Example.COM", "alice@example.com"),
        ("  bob@ex.org\n", "bob@ex.org"),
        ("a+tag@sub.example.io", "a+tag@sub.example.io"),
    ],
)
def test_an_address_has_one_spelling(raw: str, normal: str) -> None:
    assert normal_email(raw) == normal
    assert user_id_for(raw) == user_id_for(normal)


@pytest.mark.parametrize(
    "raw", ["", "alice", "@example.com", "alice@", "alice@localhost", "a b@x.io", "x@." + "a" * 300]
)
def test_what_is_not_an_address_is_refused(raw: str) -> None:
    with pytest.raises(InvalidUser) as refused:
        normal_email(raw)
    assert refused.value.code == "invalid_email"


@given(st.emails())
def test_normalising_twice_changes_nothing(email: str) -> None:
    try:
        once = normal_email(email)
    except InvalidUser:
        return
    assert normal_email(once) == once
    assert normal_email(once.upper()) == once


def test_a_user_registers_with_a_role_and_trades_from_its_own_account() -> None:
    user = User.register("Carol@Example.com", "$argon2id$hash", "operator", T0)
    (registered,) = user.collect_events()
    assert isinstance(registered, User.Registered)
    assert registered.email == "carol@example.com"
    assert user.id == user_id_for("carol@example.com")
    assert user.account_id == user_account_id(user.id)
    assert user.role == "operator"
    with pytest.raises(InvalidUser) as refused:
        User.register("dave@example.com", "$argon2id$hash", "root", T0)
    assert refused.value.code == "invalid_role"


def test_api_keys_are_created_once_and_revoked_once() -> None:
    user = User.register("erin@example.com", "h", "user", T0)
    assert user.create_api_key("k1", ["trade", "read", "trade"], "bot", T0)
    assert not user.create_api_key("k1", ["read"], "retry", T0)
    assert user.api_keys == {"k1": "read,trade"}
    assert user.revoke_api_key("k1", T0)
    assert not user.revoke_api_key("k1", T0)
    assert not user.create_api_key("k1", ["read"], "reuse", T0), "a revoked id never comes back"
    with pytest.raises(UnknownApiKey):
        user.revoke_api_key("nope", T0)
    kinds = [type(e).__name__ for e in user.collect_events()]
    assert kinds == ["Registered", "ApiKeyCreated", "ApiKeyRevoked"]


@pytest.mark.parametrize("permissions", [[], ["admin"], "read", [1], None])
def test_permissions_must_be_a_list_of_known_ones(permissions: Any) -> None:
    with pytest.raises(InvalidUser) as refused:
        permissions_text(permissions)
    assert refused.value.code == "invalid_permissions"


def test_a_user_holds_a_bounded_number_of_live_keys() -> None:
    user = User.register("frank@example.com", "h", "user", T0)
    for n in range(MAX_API_KEYS):
        user.create_api_key(f"k{n}", ["read"], "", T0)
    with pytest.raises(InvalidUser) as refused:
        user.create_api_key("one-more", ["read"], "", T0)
    assert refused.value.code == "too_many_api_keys"
    user.revoke_api_key("k0", T0)
    assert user.create_api_key("one-more", ["read"], "", T0)


# -- the processor ---------------------------------------------------------------------


def _register(email: str, role: str = "user", command_id: str | None = None) -> Command:
    user_id = user_id_for(email)
    return Command(
        messages.REGISTER_USER,
        command_id or f"register-{email}",
        T0,
        user_account_id(user_id),
        {"user_id": str(user_id), "email": email, "password_hash": "$argon2id$x", "role": role},
    )


def _user_command(kind: str, email: str, command_id: str, **fields: Any) -> Command:
    user_id = user_id_for(email)
    return Command(
        kind, command_id, T0, user_account_id(user_id), {"user_id": str(user_id), **fields}
    )


def _outcomes(cluster: LocalCluster) -> dict[str, Outcome]:
    found = (Outcome.decode(r.value) for r in cluster.event_log(cluster.topics.outcomes))
    return {outcome.command_id: outcome for outcome in found}


def _event_topics(cluster: LocalCluster) -> list[str]:
    topics = []
    for record in cluster.event_log(cluster.topics.user_events):
        topic = header(record.headers, "bitex-event")
        assert topic is not None
        topics.append(topic.decode())
    return topics


def test_registering_opens_the_account_and_a_second_registration_is_refused() -> None:
    cluster = LocalCluster(demo_markets())
    cluster.send(_register("gina@example.com"))
    cluster.send(_register("GINA@example.com", command_id="again"))
    cluster.run_until_quiet()
    outcomes = _outcomes(cluster)
    first = outcomes["register-gina@example.com"]
    user_id, account_id = (
        user_id_for("gina@example.com"),
        user_account_id(user_id_for("gina@example.com")),
    )
    assert first.ok
    assert first.details["result"] == "registered"
    assert first.details["written"] == {str(user_id): 1, str(account_id): 1}
    refused = outcomes["again"]
    assert (refused.ok, refused.code) == (False, "email_taken")
    assert _event_topics(cluster) == ["bitex.user.Registered", "bitex.account.Opened"]
    assert [a.id for a in cluster.accounts()] == [account_id]


def test_a_registration_must_name_the_user_and_account_of_its_address() -> None:
    cluster = LocalCluster(demo_markets())
    forged = _register("hana@example.com")
    forged.fields["email"] = "someone-else@example.com"
    cluster.send(forged)
    cluster.run_until_quiet()
    (outcome,) = _outcomes(cluster).values()
    assert (outcome.ok, outcome.code) == (False, "invalid_user")
    assert _event_topics(cluster) == []


def test_keys_are_created_revoked_and_survive_a_crash() -> None:
    cluster = LocalCluster(demo_markets())
    email = "ivan@example.com"
    cluster.send(_register(email))
    cluster.send(_user_command(messages.CREATE_API_KEY, email, "key-1", permissions=["read"]))
    cluster.run_until_quiet()
    key_id = _outcomes(cluster)["key-1"].details["result"]
    partition = cluster.topics.account_partition(user_account_id(user_id_for(email)))
    inbox = cluster.topics.account_commands
    cluster.snapshot(inbox, partition)
    cluster.send(_user_command(messages.CREATE_API_KEY, email, "key-2", permissions=["trade"]))
    cluster.run_until_quiet()
    cluster.crash(inbox, partition, resume_at=cluster.consumed[inbox, partition])

    cluster.send(_user_command(messages.REVOKE_API_KEY, email, "revoke", key_id=key_id))
    cluster.send(_user_command(messages.REVOKE_API_KEY, email, "revoke-again", key_id=key_id))
    cluster.send(_user_command(messages.REVOKE_API_KEY, email, "bad", key_id="nope"))
    cluster.send(_register(email, command_id="late"))
    cluster.run_until_quiet()
    outcomes = _outcomes(cluster)
    assert outcomes["revoke"].details["result"] == "revoked"
    assert outcomes["revoke-again"].details["result"] == "already_revoked"
    assert (outcomes["bad"].ok, outcomes["bad"].code) == (False, "api_key_not_found")
    assert outcomes["late"].code == "email_taken", "the restored core still knows the user"

    replayer = Replayer(demo_markets())
    mapper = EventMapper()
    for record in cluster.event_log(cluster.topics.user_events):
        stored = stored_event(record.value, record.headers)
        assert stored is not None
        replayer.apply(mapper.to_domain_event(stored))
    (user,) = replayer.users.values()
    key_2 = outcomes["key-2"].details["result"]
    assert user.api_keys == {key_2: "trade"}
    assert user.revoked_keys == {key_id}


def test_key_commands_for_an_unknown_user_are_refused() -> None:
    cluster = LocalCluster(demo_markets())
    cluster.send(
        _user_command(messages.CREATE_API_KEY, "nobody@example.com", "k", permissions=["read"])
    )
    cluster.run_until_quiet()
    (outcome,) = _outcomes(cluster).values()
    assert (outcome.ok, outcome.code) == (False, "unknown_user")
