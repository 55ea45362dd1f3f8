"""A deterministic fingerprint of a whole domain state.

Two states have the same hash exactly when their accounts, reservations,
orders, books and trade tapes are equal, whatever order they were built in.
The replay tool prints it; the distributed system must reach the hash of the
in-process reference.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from uuid import UUID

from domain.accounts import Account
from domain.matching import Side
from domain.venue import Venue


def _line(*fields: object) -> bytes:
    return ("|".join(["" if f is None else str(f) for f in fields]) + "\n").encode()


def _text(value: object) -> str:
    return "" if value is None else str(value)


def _by_id(item: tuple[UUID, object]) -> int:
    return item[0].int


def state_hash(accounts: Iterable[Account], venues: Iterable[Venue]) -> str:
    return hash_parts(accounts_part(accounts), venues_part(venues))


def hash_parts(accounts: bytes, venues: bytes) -> str:
    """The hash of the two parts, each written by its function below (a replay writes
    the venues' part while its other process is still replaying accounts)."""
    digest = hashlib.sha256(accounts)
    digest.update(venues)
    return digest.hexdigest()


def accounts_part(accounts: Iterable[Account]) -> bytes:
    lines = []
    # Sorted by id: by ``UUID.int`` (what UUIDs compare by), a C comparison, not a
    # Python one, over hundreds of thousands of orders.
    for account in sorted(accounts, key=lambda a: a.id.int):
        lines.append(_line("account", account.id, account.version, account.owner))
        for asset, holding in sorted(account.holdings.items()):
            lines.append(_line("holding", asset, holding.available, holding.locked))
        for order_id, reservation in sorted(account.reservations.items(), key=_by_id):
            lines.append(
                _line(
                    "reservation",
                    order_id,
                    reservation.asset,
                    reservation.units,
                    reservation.limit_price,
                )
            )
    return b"".join(lines)


def venues_part(venues: Iterable[Venue]) -> bytes:
    lines = []
    for venue in sorted(venues, key=lambda v: v.market.symbol):
        tape = venue.tape
        lines.append(_line("market", tape.symbol, tape.version, tape.last_price))
        # What ``_line`` writes, spelled out for the hundreds of thousands of orders.
        lines.append(
            "".join(
                [
                    f"order|{order_id!s}|{order.version!s}|{order.status.value}|"
                    f"{_text(order.price)}|{_text(order.remaining)}|"
                    f"{order.filled_quantity!s}|{order.filled_notional!s}\n"
                    for order_id, order in sorted(venue.orders.items(), key=_by_id)
                ]
            ).encode()
        )
        for side in (Side.BUY, Side.SELL):
            for resting in venue.book.iter_orders(side):
                lines.append(
                    _line("book", side.value, resting.order_id, resting.price, resting.remaining)
                )
    return b"".join(lines)
