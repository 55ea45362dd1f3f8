"""Commands and outcomes as they travel on Kafka.

A command is stamped once, by whoever publishes it: an id (its identity for
deduplication and for deriving order ids) and a time (the time of every
event it causes). Processors never read the clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import orjson

OPEN_ACCOUNT = "open_account"
DEPOSIT = "deposit"
WITHDRAW = "withdraw"
PLACE_ORDER = "place_order"
CANCEL_ORDER = "cancel_order"
CANCEL_ALL = "cancel_all"
AMEND_ORDER = "amend_order"
SET_FEE_RATES = "set_fee_rates"
REGISTER_USER = "register_user"
CREATE_API_KEY = "create_api_key"
REVOKE_API_KEY = "revoke_api_key"
LIST_MARKET = "list_market"
"""An operator lists a market (fields: ``domain.markets.market_fields``); the account
processor forwards it to the market's matching processor, which lists it."""

COMMAND_KINDS = frozenset(
    {OPEN_ACCOUNT, DEPOSIT, WITHDRAW, PLACE_ORDER, CANCEL_ORDER, CANCEL_ALL, AMEND_ORDER}
    | {SET_FEE_RATES, REGISTER_USER, CREATE_API_KEY, REVOKE_API_KEY, LIST_MARKET}
)


class MalformedMessage(ValueError):
    """A record on a BitEx topic that does not decode: an alarm, never silently skipped."""


@dataclass(frozen=True, slots=True)
class Command:
    kind: str
    command_id: str
    at: datetime
    account_id: UUID
    fields: dict[str, Any] = field(default_factory=dict)

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "kind": self.kind,
                "command_id": self.command_id,
                "at": self.at.isoformat(),
                "account_id": str(self.account_id),
                "fields": self.fields,
            },
            option=orjson.OPT_SORT_KEYS,
        )

    @classmethod
    def decode(cls, data: bytes) -> Command:
        try:
            raw = orjson.loads(data)
            kind = raw["kind"]
            if kind not in COMMAND_KINDS:
                msg = f"unknown command kind {kind!r}"
                raise MalformedMessage(msg)
            return cls(
                kind=kind,
                command_id=str(raw["command_id"]),
                at=datetime.fromisoformat(raw["at"]),
                account_id=UUID(raw["account_id"]),
                fields=dict(raw["fields"]),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            if isinstance(error, MalformedMessage):
                raise
            msg = f"malformed command: {error}"
            raise MalformedMessage(msg) from None


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of a command: ``ok`` with details, or an error code and message."""

    command_id: str
    ok: bool
    details: dict[str, Any] = field(default_factory=dict)
    code: str | None = None
    message: str | None = None

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "command_id": self.command_id,
                "ok": self.ok,
                "details": self.details,
                "code": self.code,
                "message": self.message,
            },
            option=orjson.OPT_SORT_KEYS,
        )

    @classmethod
    def decode(cls, data: bytes) -> Outcome:
        raw = orjson.loads(data)
        return cls(raw["command_id"], raw["ok"], raw["details"], raw["code"], raw["message"])
