"""The User aggregate: who may log in, with which role, and their API keys.

A user's id is derived from their e-mail address (case-folded), so two
registrations of one address name one aggregate and the second is refused by
the aggregate's single writer, with no lookup table to race on. A user trades
from one account, ``account_id_for(str(user_id))``, and the user lives on the
same partition as that account.

Secrets stay out of events: a password arrives already hashed (the gateway
hashes with argon2), and an API key's secret is derived from the exchange's
master key and the key id, so the event records only the id and permissions.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from uuid import UUID, uuid5

from domain.aggregates import BITEX_NAMESPACE, ExchangeAggregate, StampedCreated, account_id_for
from domain.errors import DomainError

USER_NAMESPACE = uuid5(BITEX_NAMESPACE, "user")
API_KEY_NAMESPACE = uuid5(BITEX_NAMESPACE, "api-key")

MAX_EMAIL_LENGTH = 254
MAX_LABEL_LENGTH = 100
MAX_API_KEYS = 20
"""Live (unrevoked) keys per user."""


class Role(StrEnum):
    USER = "user"
    OPERATOR = "operator"
    """May deposit funds for any account."""


class Permission(StrEnum):
    READ = "read"
    TRADE = "trade"
    WITHDRAW = "withdraw"


class InvalidUser(DomainError):
    code = "invalid_user"


class EmailTaken(DomainError):
    code = "email_taken"


class UnknownApiKey(DomainError):
    code = "api_key_not_found"


def normal_email(email: str) -> str:
    """The one spelling of an address that names its user: trimmed and case-folded.

    Only the shape is checked (one ``@``, a dotted domain, no spaces); whether the
    address receives mail is not the exchange's business here.
    """
    address = email.strip().casefold()
    local, at, domain = address.rpartition("@")
    if (
        not at
        or not local
        or "." not in domain.strip(".")
        or any(c.isspace() for c in address)
        or len(address) > MAX_EMAIL_LENGTH
    ):
        msg = f"{email!r} is not an e-mail address"
        raise InvalidUser(msg, "invalid_email")
    return address


def user_id_for(email: str) -> UUID:
    return uuid5(USER_NAMESPACE, normal_email(email))


def user_account_id(user_id: UUID) -> UUID:
    """The account a user trades from."""
    return account_id_for(str(user_id))


def api_key_id_for(user_id: UUID, command_id: str) -> str:
    """A key id derived from the command that creates it (32 hex digits)."""
    return uuid5(API_KEY_NAMESPACE, f"{user_id}/{command_id}").hex


def permissions_text(permissions: object) -> str:
    """Permissions as stored: sorted, comma-separated, each one known, at least one."""
    if not isinstance(permissions, list | tuple | set | frozenset) or not permissions:
        msg = "permissions must be a non-empty list of 'read', 'trade', 'withdraw'"
        raise InvalidUser(msg, "invalid_permissions")
    known = {p.value for p in Permission}
    wrong = [p for p in permissions if not isinstance(p, str) or p not in known]
    if wrong:
        msg = f"unknown permission {wrong[0]!r}: use 'read', 'trade' or 'withdraw'"
        raise InvalidUser(msg, "invalid_permissions")
    return ",".join(sorted(set(permissions)))


class User(ExchangeAggregate):
    TOPIC = "bitex.user"

    class Registered(ExchangeAggregate.Event, StampedCreated):
        TOPIC = "bitex.user.Registered"
        email: str
        password_hash: str
        role: str
        account_id: UUID

    class ApiKeyCreated(ExchangeAggregate.Event):
        TOPIC = "bitex.user.ApiKeyCreated"
        key_id: str
        permissions: str
        label: str

        def apply(self, user: User) -> None:
            user.api_keys[self.key_id] = self.permissions

    class ApiKeyRevoked(ExchangeAggregate.Event):
        TOPIC = "bitex.user.ApiKeyRevoked"
        key_id: str

        def apply(self, user: User) -> None:
            del user.api_keys[self.key_id]
            user.revoked_keys.add(self.key_id)

    def __init__(self, email: str, password_hash: str, role: str, account_id: UUID) -> None:
        self.email = email
        self.password_hash = password_hash
        self.role = role
        self.account_id = account_id
        self.api_keys: dict[str, str] = {}
        """Live keys: key id -> permissions text."""
        self.revoked_keys: set[str] = set()

    @classmethod
    def register(cls, email: str, password_hash: str, role: str, at: datetime) -> User:
        address = normal_email(email)
        if role not in {r.value for r in Role}:
            msg = f"unknown role {role!r}: use 'user' or 'operator'"
            raise InvalidUser(msg, "invalid_role")
        if not password_hash:
            msg = "a user needs a password hash"
            raise InvalidUser(msg)
        user_id = user_id_for(address)
        return cls._create(
            cls.Registered,
            id=user_id,
            email=address,
            password_hash=password_hash,
            role=role,
            account_id=user_account_id(user_id),
            timestamp=at,
        )

    def create_api_key(self, key_id: str, permissions: object, label: str, at: datetime) -> bool:
        """Record a new key; False if ``key_id`` exists already (a retried command)."""
        text = permissions_text(permissions)
        if key_id in self.api_keys or key_id in self.revoked_keys:
            return False
        if len(label) > MAX_LABEL_LENGTH:
            msg = f"a key's label is at most {MAX_LABEL_LENGTH} characters"
            raise InvalidUser(msg, "invalid_label")
        if len(self.api_keys) >= MAX_API_KEYS:
            msg = f"a user may hold at most {MAX_API_KEYS} live API keys; revoke one first"
            raise InvalidUser(msg, "too_many_api_keys")
        self._record(self.ApiKeyCreated, at, key_id=key_id, permissions=text, label=label)
        return True

    def revoke_api_key(self, key_id: str, at: datetime) -> bool:
        """Revoke a live key; False if it was revoked already."""
        if key_id in self.revoked_keys:
            return False
        if key_id not in self.api_keys:
            msg = f"no API key {key_id!r}"
            raise UnknownApiKey(msg)
        self._record(self.ApiKeyRevoked, at, key_id=key_id)
        return True


USER_EVENTS = (User.Registered, User.ApiKeyCreated, User.ApiKeyRevoked)
