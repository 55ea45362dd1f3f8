"""A deterministic fingerprint of a whole domain state.

Two states have the same hash exactly when their accounts, reservations,
orders, books and trade tapes are equal, whatever order they were built in.
The replay tool prints it; the distributed system must reach the hash of the
in-process reference.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from domain.accounts import Account
from domain.matching import Side
from domain.venue import Venue


def _line(*fields: object) -> bytes:
    return ("|".join("" if f is None else str(f) for f in fields) + "\n").encode()


def state_hash(accounts: Iterable[Account], venues: Iterable[Venue]) -> str:
    digest = hashlib.sha256()
    for account in sorted(accounts, key=lambda a: a.id):
        digest.update(_line("account", account.id, account.version, account.owner))
        for asset, holding in sorted(account.holdings.items()):
            digest.update(_line("holding", asset, holding.available, holding.locked))
        for order_id, reservation in sorted(account.reservations.items()):
            digest.update(
                _line(
                    "reservation",
                    order_id,
                    reservation.asset,
                    reservation.units,
                    reservation.limit_price,
                )
            )
    for venue in sorted(venues, key=lambda v: v.market.symbol):
        tape = venue.tape
        digest.update(_line("market", tape.symbol, tape.version, tape.last_price))
        for order_id, order in sorted(venue.orders.items()):
            digest.update(
                _line(
                    "order",
                    order_id,
                    order.version,
                    order.status.value,
                    order.price,
                    order.remaining,
                    order.filled_quantity,
                    order.filled_notional,
                )
            )
        for side in (Side.BUY, Side.SELL):
            for resting in venue.book.iter_orders(side):
                digest.update(
                    _line("book", side.value, resting.order_id, resting.price, resting.remaining)
                )
    return digest.hexdigest()
