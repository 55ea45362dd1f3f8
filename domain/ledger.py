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
from dataclasses import dataclass
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


@dataclass(frozen=True, slots=True)
class Leg:
    """``units`` of ``asset`` into (positive) or out of (negative) one ledger account."""

    ledger_account: str
    bucket: str
    asset: str
    units: int


def postings(event: CanMutateAggregate[UUID]) -> list[Leg]:
    """The legs of the posting an account event makes (empty if it moves nothing)."""
    me = str(event.originator_id)
    if isinstance(event, Account.Deposited):
        units = units_of(event.amount)
        return [Leg(me, AVAILABLE, event.asset, units), Leg(EXTERNAL, "", event.asset, -units)]
    if isinstance(event, Account.Withdrawn):
        units = units_of(event.amount)
        return [Leg(me, AVAILABLE, event.asset, -units), Leg(EXTERNAL, "", event.asset, units)]
    if isinstance(
        event, (Account.FundsLocked, Account.ReservationAdjusted, Account.AmendRequested)
    ):
        if isinstance(event, Account.FundsLocked):
            amount = event.amount
        elif isinstance(event, Account.AmendRequested):
            amount = event.prelocked
        else:
            amount = event.change
        units = units_of(amount)
        return [Leg(me, AVAILABLE, event.asset, -units), Leg(me, LOCKED, event.asset, units)]
    if isinstance(event, Account.FundsReleased):
        units = units_of(event.amount)
        return [Leg(me, LOCKED, event.asset, -units), Leg(me, AVAILABLE, event.asset, units)]
    if isinstance(event, Account.TradeSettled):
        spent, released = units_of(event.spent), units_of(event.released)
        received, fee = units_of(event.received), units_of(event.fee)
        pay, get, middle = event.spent_asset, event.received_asset, clearing(event.symbol)
        return [
            Leg(me, LOCKED, pay, -(spent + released)),
            Leg(me, AVAILABLE, pay, released),
            Leg(middle, "", pay, spent),
            Leg(middle, "", get, -received),
            Leg(me, AVAILABLE, get, received - fee),
            Leg(FEES, "", get, fee),
        ]
    return []


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
