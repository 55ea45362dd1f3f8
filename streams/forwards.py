"""Messages between the processors (not events: they may expire with their topic).

The account processor forwards orders, cancels, amends and listings to the
matching processor of the market; the matching processor relays the order
events an account must settle, and refused amends, back to the account inbox,
and a listed market to every partition of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import orjson

from domain.matching import SelfTradePrevention, Side, TimeInForce
from domain.orders import OrderRequest, OrderType
from infra.messages import MalformedMessage

KIND = "bitex-kind"
"""Header naming what a non-event record on an inbox is."""

SUBMIT = b"submit"
REJECT = b"reject"
CANCEL = b"cancel"
CANCEL_ALL = b"cancel_all"
AMEND = b"amend"
AMEND_REFUSED = b"amend_refused"
LIST = b"list"
MARKET_LISTED = b"market_listed"
"""A relay to every account partition: take this market (value: its ``market_fields``)."""


def _decimal(value: Decimal | None) -> str | None:
    return None if value is None else format(value, "f")


def _undecimal(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


def request_to_json(request: OrderRequest) -> dict[str, Any]:
    return {
        "order_id": str(request.order_id),
        "account_id": str(request.account_id),
        "symbol": request.symbol,
        "side": request.side.value,
        "type": request.type.value,
        "price": _decimal(request.price),
        "quantity": _decimal(request.quantity),
        "quote_quantity": _decimal(request.quote_quantity),
        "time_in_force": request.time_in_force.value,
        "post_only": request.post_only,
        "stp": request.stp.value,
        "client_order_id": request.client_order_id,
        "price_ticks": request.price_ticks,
        "lots": request.lots,
        "quote_units": request.quote_units,
    }


def request_from_json(raw: dict[str, Any]) -> OrderRequest:
    return OrderRequest(
        order_id=UUID(raw["order_id"]),
        account_id=UUID(raw["account_id"]),
        symbol=raw["symbol"],
        side=Side(raw["side"]),
        type=OrderType(raw["type"]),
        price=_undecimal(raw["price"]),
        quantity=_undecimal(raw["quantity"]),
        quote_quantity=_undecimal(raw["quote_quantity"]),
        time_in_force=TimeInForce(raw["time_in_force"]),
        post_only=raw["post_only"],
        stp=SelfTradePrevention(raw["stp"]),
        client_order_id=raw["client_order_id"],
        price_ticks=raw["price_ticks"],
        lots=raw["lots"],
        quote_units=raw["quote_units"],
    )


@dataclass(frozen=True, slots=True)
class Forward:
    """Work for a matching processor; ``body`` depends on the kind."""

    kind: bytes
    command_id: str
    at: datetime
    account_id: UUID
    symbol: str
    body: dict[str, Any]

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "command_id": self.command_id,
                "at": self.at.isoformat(),
                "account_id": str(self.account_id),
                "symbol": self.symbol,
                "body": self.body,
            },
            option=orjson.OPT_SORT_KEYS,
        )

    @classmethod
    def decode(cls, kind: bytes, data: bytes) -> Forward:
        if kind not in (SUBMIT, REJECT, CANCEL, CANCEL_ALL, AMEND, LIST):
            msg = f"unknown forward kind {kind!r}"
            raise MalformedMessage(msg)
        try:
            raw = orjson.loads(data)
            return cls(
                kind,
                raw["command_id"],
                datetime.fromisoformat(raw["at"]),
                UUID(raw["account_id"]),
                raw["symbol"],
                raw["body"],
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            msg = f"malformed forward: {error}"
            raise MalformedMessage(msg) from None


@dataclass(frozen=True, slots=True)
class AmendRefused:
    """The book refused an amend: the account gives back what it locked for it,
    and the order may be amended again."""

    order_id: UUID
    symbol: str
    units: int
    at: datetime

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "order_id": str(self.order_id),
                "symbol": self.symbol,
                "units": self.units,
                "at": self.at.isoformat(),
            },
            option=orjson.OPT_SORT_KEYS,
        )

    @classmethod
    def decode(cls, data: bytes) -> AmendRefused:
        raw = orjson.loads(data)
        return cls(
            UUID(raw["order_id"]), raw["symbol"], raw["units"], datetime.fromisoformat(raw["at"])
        )
