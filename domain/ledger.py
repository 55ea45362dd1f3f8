"""Double-entry view of account events: every balance change is a leg of a posting.

Besides user accounts (split into ``available`` and ``locked``), three kinds
of ledger account exist only here: ``external`` (the world deposits come from
and withdrawals go to), ``fees`` (the exchange's income) and
``clearing:<symbol>`` (a trade's two sides meet there; it is back to zero
once both sides have settled). The legs of each posting sum to zero per
asset, so the total over every ledger account is zero after every event.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from decimal import Decimal
from operator import attrgetter
from typing import Any, NamedTuple
from uuid import UUID

from eventsourcing.domain import CanMutateAggregate

from domain.accounts import Account
from domain.errors import InvariantViolation
from domain.money import units_of

EXTERNAL = "external"
FEES = "fees"
AVAILABLE = "available"
LOCKED = "locked"


def clearing(symbol: str) -> str:
    return f"clearing:{symbol}"


class Leg(NamedTuple):
    """``units`` of ``asset`` into (positive) or out of (negative) one ledger account.

    A named tuple: an audit makes millions of them, and a tuple is the cheapest
    immutable record to build.
    """

    ledger_account: str
    bucket: str
    asset: str
    units: int


_new = tuple.__new__
"""Builds a ``Leg`` as ``_new(Leg, (account, bucket, asset, units))``: what the named
tuple's own ``__new__`` does, without its Python frame (an audit builds millions)."""


def postings(event: CanMutateAggregate[UUID], me: str | None = None) -> list[Leg]:
    """The legs of the posting an account event makes (empty if it moves nothing).

    ``me`` is the account's ledger name (``str`` of its id) if the caller has it.
    """
    post = _POSTINGS.get(type(event))
    if post is None:
        post = _posting_for(type(event))
    return post(event, str(event.originator_id) if me is None else me)


def _deposited(event: Any, me: str) -> list[Leg]:
    units = units_of(event.amount)
    return [
        _new(Leg, (me, AVAILABLE, event.asset, units)),
        _new(Leg, (EXTERNAL, "", event.asset, -units)),
    ]


def _withdrawn(event: Any, me: str) -> list[Leg]:
    units = units_of(event.amount)
    return [
        _new(Leg, (me, AVAILABLE, event.asset, -units)),
        _new(Leg, (EXTERNAL, "", event.asset, units)),
    ]


def _locking(amount: Callable[[Any], Decimal]) -> Callable[[Any, str], list[Leg]]:
    """Postings from available to locked of ``amount(event)`` (negative: back)."""

    def post(event: Any, me: str) -> list[Leg]:
        units = units_of(amount(event))
        return [
            _new(Leg, (me, AVAILABLE, event.asset, -units)),
            _new(Leg, (me, LOCKED, event.asset, units)),
        ]

    return post


def _released(event: Any, me: str) -> list[Leg]:
    units = units_of(event.amount)
    return [
        _new(Leg, (me, LOCKED, event.asset, -units)),
        _new(Leg, (me, AVAILABLE, event.asset, units)),
    ]


def _settled(event: Any, me: str) -> list[Leg]:
    spent, released = units_of(event.spent), units_of(event.released)
    received, fee = units_of(event.received), units_of(event.fee)
    pay, get, middle = event.spent_asset, event.received_asset, clearing(event.symbol)
    return [
        _new(Leg, (me, LOCKED, pay, -(spent + released))),
        _new(Leg, (me, AVAILABLE, pay, released)),
        _new(Leg, (middle, "", pay, spent)),
        _new(Leg, (middle, "", get, -received)),
        _new(Leg, (me, AVAILABLE, get, received - fee)),
        _new(Leg, (FEES, "", get, fee)),
    ]


def _nothing(event: Any, me: str) -> list[Leg]:
    return []


_POSTINGS: dict[type, Callable[[Any, str], list[Leg]]] = {
    Account.Deposited: _deposited,
    Account.Withdrawn: _withdrawn,
    Account.FundsLocked: _locking(attrgetter("amount")),
    Account.AmendRequested: _locking(attrgetter("prelocked")),
    Account.ReservationAdjusted: _locking(attrgetter("change")),
    Account.FundsReleased: _released,
    Account.TradeSettled: _settled,
}
"""How each kind of account event posts (found by its exact class, for speed)."""


def _posting_for(kind: type) -> Callable[[Any, str], list[Leg]]:
    """The posting of the nearest class ``kind`` derives from (a subclass posts as its
    base), remembered; events of other kinds post nothing."""
    post = next((_POSTINGS[base] for base in kind.__mro__ if base in _POSTINGS), _nothing)
    _POSTINGS[kind] = post
    return post


class Ledger:
    """Balances of every ledger account, built from account events alone."""

    def __init__(self) -> None:
        self.balances: defaultdict[tuple[str, str, str], int] = defaultdict(int)

    def apply(self, event: CanMutateAggregate[UUID]) -> None:
        legs = postings(event)
        per_asset: defaultdict[str, int] = defaultdict(int)
        for leg in legs:
            self.balances[leg.ledger_account, leg.bucket, leg.asset] += leg.units
            per_asset[leg.asset] += leg.units
        unbalanced = {asset: total for asset, total in per_asset.items() if total}
        if unbalanced:
            msg = f"posting of {type(event).__qualname__} does not balance: {unbalanced}"
            raise InvariantViolation(msg)

    def totals_by_asset(self) -> dict[str, int]:
        """Sum over every ledger account per asset: zero when the books balance."""
        totals: defaultdict[str, int] = defaultdict(int)
        for (_, _, asset), units in self.balances.items():
            totals[asset] += units
        return dict(totals)

    def balance(self, ledger_account: str, asset: str, bucket: str = "") -> int:
        return self.balances.get((ledger_account, bucket, asset), 0)
