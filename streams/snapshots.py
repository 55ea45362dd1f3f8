"""Snapshots of a processor core's state, so a restart need not replay all history.

A snapshot is taken after a batch's outputs are durable. It records the
input offset it covers and, per own output log, the offset the log had
reached; a restart loads it, then replays only what came after. Every value
is plain JSON, decimals as strings at full scale, so a snapshot written by
one version can be read (or upgraded) by the next.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar
from uuid import UUID

import orjson

from domain.accounts import Account, Holding, Reservation
from domain.aggregates import ExchangeAggregate
from domain.markets import FeeRate, Market, market_fields, market_from_fields
from domain.matching import SelfTradePrevention, Side, TimeInForce
from domain.orders import Order, OrderStatus
from domain.users import User
from domain.venue import TradeTape, Venue

Json = dict[str, Any]


@dataclass(frozen=True)
class Snapshot:
    """A core's state as of ``input_offset`` (the next input it would take), and how far
    each of its own output logs had come (``outputs``: topic -> next offset)."""

    input_offset: int
    outputs: dict[str, int]
    state: Json

    def encode(self) -> bytes:
        return zlib.compress(
            orjson.dumps(
                {"input_offset": self.input_offset, "outputs": self.outputs, "state": self.state}
            )
        )

    @classmethod
    def decode(cls, data: bytes) -> Snapshot:
        raw = orjson.loads(zlib.decompress(data))
        return cls(raw["input_offset"], raw["outputs"], raw["state"])


A = TypeVar("A", bound=ExchangeAggregate)


def _dec(value: Decimal | None) -> str | None:
    return None if value is None else format(value, "f")


def _undec(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


def _base(aggregate: ExchangeAggregate) -> Json:
    return {
        "id": str(aggregate.id),
        "version": aggregate.version,
        "created_on": aggregate.created_on.isoformat(),
        "modified_on": aggregate.modified_on.isoformat(),
    }


def _shell(kind: type[A], data: Json) -> A:
    aggregate = kind.__new__(kind)
    aggregate.__base_init__(
        UUID(data["id"]), data["version"], datetime.fromisoformat(data["created_on"])
    )
    aggregate.modified_on = datetime.fromisoformat(data["modified_on"])
    return aggregate


def account_to_json(account: Account) -> Json:
    return {
        **_base(account),
        "owner": account.owner,
        "holdings": {a: [h.available, h.locked] for a, h in account.holdings.items()},
        "reservations": {
            str(order_id): [
                r.symbol,
                r.side.value,
                r.asset,
                r.units,
                _dec(r.limit_price),
                r.amending,
            ]
            for order_id, r in account.reservations.items()
        },
        "order_ids": sorted(str(o) for o in account.order_ids),
        "deposit_tx_ids": sorted(account.deposit_tx_ids),
        "withdrawal_ids": sorted(account.withdrawal_ids),
        "trade_ids": sorted(account.trade_ids),
        "fee_overrides": {
            symbol: [_dec(maker.rate), _dec(taker.rate)]
            for symbol, (maker, taker) in account.fee_overrides.items()
        },
    }


def user_to_json(user: User) -> Json:
    return {
        **_base(user),
        "email": user.email,
        "password_hash": user.password_hash,
        "role": user.role,
        "account_id": str(user.account_id),
        "api_keys": user.api_keys,
        "revoked_keys": sorted(user.revoked_keys),
    }


def user_from_json(data: Json) -> User:
    user = _shell(User, data)
    User.__init__(
        user, data["email"], data["password_hash"], data["role"], UUID(data["account_id"])
    )
    user.api_keys = dict(data["api_keys"])
    user.revoked_keys = set(data["revoked_keys"])
    return user


def account_from_json(data: Json) -> Account:
    account = _shell(Account, data)
    Account.__init__(account, data["owner"])
    account.holdings = {a: Holding(h[0], h[1]) for a, h in data["holdings"].items()}
    account.reservations = {
        UUID(order_id): Reservation(r[0], Side(r[1]), r[2], r[3], _undec(r[4]), r[5])
        for order_id, r in data["reservations"].items()
    }
    account.order_ids = {UUID(o) for o in data["order_ids"]}
    account.deposit_tx_ids = set(data["deposit_tx_ids"])
    account.withdrawal_ids = set(data["withdrawal_ids"])
    account.trade_ids = set(data["trade_ids"])
    account.fee_overrides = {
        symbol: (FeeRate(Decimal(maker)), FeeRate(Decimal(taker)))
        for symbol, (maker, taker) in data["fee_overrides"].items()
    }
    return account


def order_to_json(order: Order) -> Json:
    return {
        **_base(order),
        "account_id": str(order.account_id),
        "symbol": order.symbol,
        "side": order.side.value,
        "type": order.type.value,
        "price": _dec(order.price),
        "quantity": _dec(order.quantity),
        "quote_quantity": _dec(order.quote_quantity),
        "time_in_force": order.time_in_force.value,
        "post_only": order.post_only,
        "stp": order.stp.value,
        "client_order_id": order.client_order_id,
        "status": order.status.value,
        "reason": order.reason,
        "remaining": _dec(order.remaining),
        "filled_quantity": _dec(order.filled_quantity),
        "filled_notional": _dec(order.filled_notional),
    }


def order_from_json(data: Json) -> Order:
    order = _shell(Order, data)
    Order.__init__(
        order,
        UUID(data["account_id"]),
        data["symbol"],
        data["side"],
        data["type"],
        _undec(data["price"]),
        _undec(data["quantity"]),
        _undec(data["quote_quantity"]),
        data["time_in_force"],
        data["post_only"],
        data["stp"],
        data["client_order_id"],
    )
    order.status = OrderStatus(data["status"])
    order.reason = data["reason"]
    order.remaining = _undec(data["remaining"])
    order.filled_quantity = Decimal(data["filled_quantity"])
    order.filled_notional = Decimal(data["filled_notional"])
    return order


def venue_to_json(venue: Venue) -> Json:
    tape = venue.tape
    book = venue.book
    return {
        "tape": {
            **_base(tape),
            "symbol": tape.symbol,
            "market": market_fields(tape.market),
            "last_price": _dec(tape.last_price),
        },
        "orders": [order_to_json(order) for order in venue.orders.values()],
        "book": [
            [
                str(o.order_id),
                str(o.account),
                o.side.value,
                o.price,
                o.remaining,
                o.stp.value,
                o.post_only,
            ]
            for side in (Side.BUY, Side.SELL)
            for o in book.iter_orders(side)
        ],
        "book_order": [str(order_id) for order_id in book.orders],
    }


def venue_from_json(data: Json, market: Market | None = None) -> Venue:
    """A venue as a snapshot holds it, with the market its tape lists (``market``: for
    a snapshot written before tapes held their market)."""
    tape = _shell(TradeTape, data["tape"])
    stored = data["tape"].get("market")
    listed = market_from_fields(stored) if stored is not None else market
    if listed is None:
        msg = f"the snapshot of {data['tape']['symbol']} does not say its market"
        raise ValueError(msg)
    TradeTape.__init__(tape, data["tape"]["symbol"], **TradeTape.listing(listed))
    tape.last_price = _undec(data["tape"]["last_price"])
    venue = Venue(listed, tape)
    for order_data in data["orders"]:
        order = order_from_json(order_data)
        venue.orders[order.id] = order
    book = venue.book
    for order_id, account, side, price, remaining, stp, post_only in data["book"]:
        book.place(
            UUID(order_id),
            UUID(account),
            Side(side),
            price,
            remaining,
            tif=TimeInForce.GTC,
            stp=SelfTradePrevention(stp),
            post_only=post_only,
        )
    book.orders = {UUID(o): book.orders[UUID(o)] for o in data["book_order"]}
    return venue
