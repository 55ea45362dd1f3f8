"""The checks that prove a state right; each returns what it found wrong.

Used after every step of the stateful tests and by the replay tool, so a
violation always names what broke rather than failing somewhere later.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from domain.accounts import Account
from domain.ledger import AVAILABLE, LOCKED, Ledger
from domain.matching import Side
from domain.venue import Venue


def check_state(
    accounts: Iterable[Account], venues: Iterable[Venue], ledger: Ledger | None = None
) -> list[str]:
    """Every invariant of a settled state (no fill waiting to be settled)."""
    accounts = list(accounts)
    venues = list(venues)
    problems: list[str] = []
    problems += check_balances(accounts)
    problems += check_reservations(accounts, venues)
    problems += check_books(venues)
    if ledger is not None:
        problems += check_ledger(ledger, accounts, settled=True)
    return problems


def check_balances(accounts: Iterable[Account]) -> list[str]:
    """No negative balance, and locked funds equal the sum of reservations."""
    problems = []
    for account in accounts:
        reserved: defaultdict[str, int] = defaultdict(int)
        for reservation in account.reservations.values():
            reserved[reservation.asset] += reservation.units
            if reservation.units < 0:
                problems.append(f"account {account.id}: negative reservation {reservation}")
        for asset, holding in account.holdings.items():
            if holding.available < 0 or holding.locked < 0:
                problems.append(f"account {account.id}: negative {asset} balance {holding}")
            if holding.locked != reserved[asset]:
                problems.append(
                    f"account {account.id}: {asset} locked {holding.locked} "
                    f"but its orders reserve {reserved[asset]}"
                )
    return problems


def check_reservations(accounts: Iterable[Account], venues: Iterable[Venue]) -> list[str]:
    """Each open order's reservation is exactly what it still needs, and only open
    orders hold one."""
    problems = []
    resting = {}
    for venue in venues:
        for order_id, order in venue.book.orders.items():
            resting[order_id] = (venue.market, order)
    reserved = set()
    for account in accounts:
        for order_id, reservation in account.reservations.items():
            reserved.add(order_id)
            if order_id not in resting:
                problems.append(f"order {order_id} is not open but still reserves funds")
                continue
            if reservation.amending is not None:
                problems.append(f"order {order_id} still has an amend pending")
            market, order = resting[order_id]
            need = market.resting_need(order.side is Side.BUY, order.price, order.remaining)
            if reservation.units != need:
                problems.append(f"order {order_id} reserves {reservation.units} but needs {need}")
    problems += [f"open order {oid} has no funds locked" for oid in resting.keys() - reserved]
    return problems


def check_books(venues: Iterable[Venue]) -> list[str]:
    problems = []
    for venue in venues:
        bid, ask = venue.book.best_bid(), venue.book.best_ask()
        if bid is not None and ask is not None and bid >= ask:
            problems.append(f"{venue.market.symbol}: book is crossed (bid {bid} >= ask {ask})")
        for side in (Side.BUY, Side.SELL):
            for price, total in venue.book.depth(side):
                if total <= 0:
                    problems.append(f"{venue.market.symbol}: empty level {price} on the book")
    return problems


def check_ledger(ledger: Ledger, accounts: Iterable[Account], settled: bool) -> list[str]:
    """Per-asset sums are zero, and the ledger agrees with every account's balances.

    ``settled`` also demands every clearing account be back at zero: each trade
    settled on both sides, none twice.
    """
    problems = [
        f"asset {asset}: ledger sums to {total}, not zero"
        for asset, total in sorted(ledger.totals_by_asset().items())
        if total
    ]
    for account in accounts:
        me = str(account.id)
        for asset, holding in account.holdings.items():
            for bucket, units in ((AVAILABLE, holding.available), (LOCKED, holding.locked)):
                if ledger.balance(me, asset, bucket) != units:
                    problems.append(
                        f"account {me}: {asset} {bucket} is {units}, "
                        f"ledger says {ledger.balance(me, asset, bucket)}"
                    )
    if settled:
        for (name, _, asset), units in sorted(ledger.balances.items()):
            if name.startswith("clearing:") and units:
                problems.append(f"{name}: {units} {asset} left unsettled")
    return problems
