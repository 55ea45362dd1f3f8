"""Rebuild a whole domain state from its events, in log order.

Users, accounts, orders and trade tapes are rebuilt by their own events; each book
is rebuilt from its orders' events through the engine's public operations, so
that price-time priority comes out exactly as it was. Version gaps or forks
raise, because an aggregate refuses an event that is not its next.
"""

from __future__ import annotations

from typing import TypeVar
from uuid import UUID

from domain.accounts import Account
from domain.errors import InvariantViolation
from domain.markets import Market
from domain.orders import Order
from domain.users import USER_EVENTS, User
from domain.venue import Event, TradeTape, Venue


class Replayer:
    """``markets`` are those known before the first event (a replay's listings, read
    ahead); each ``TradeTape.Listed`` lists its market, and must agree with them."""

    def __init__(self, markets: dict[str, Market] | None = None) -> None:
        self.markets = {} if markets is None else markets
        self.accounts: dict[UUID, Account] = {}
        self.users: dict[UUID, User] = {}
        self.venues: dict[str, Venue] = {}
        self._orders: dict[UUID, Order] = {}
        self._tapes: dict[UUID, TradeTape] = {}
        self.events_applied = 0

    def adopt(self, venue: Venue) -> None:
        """Take over a venue restored from a snapshot, and go on from there."""
        self.markets[venue.market.symbol] = venue.market
        self.venues[venue.market.symbol] = venue
        self._tapes[venue.tape.id] = venue.tape
        self._orders.update(venue.orders)

    def apply(self, event: Event) -> None:
        if isinstance(event, Account.Event):
            self._apply_account(event)
        elif isinstance(event, Order.Event):
            self._apply_order(event)
        elif isinstance(event, TradeTape.Event):
            self._apply_tape(event)
        elif isinstance(event, User.Registered):
            self.users[event.originator_id] = _created(event, User)
        elif isinstance(event, USER_EVENTS):
            event.mutate(self.users[event.originator_id])
        else:
            msg = f"cannot replay {type(event).__qualname__}"
            raise InvariantViolation(msg)
        self.events_applied += 1

    def _apply_account(self, event: Account.Event) -> None:
        if isinstance(event, Account.Opened):
            self.accounts[event.originator_id] = _created(event, Account)
        else:
            event.mutate(self.accounts[event.originator_id])

    def _apply_tape(self, event: TradeTape.Event) -> None:
        if isinstance(event, TradeTape.Listed):
            tape = _created(event, TradeTape)
            known = self.markets.setdefault(tape.symbol, tape.market)
            if known != tape.market:
                msg = f"{tape.symbol} is listed as {tape.market}, known as {known}"
                raise InvariantViolation(msg)
            self.venues[tape.symbol] = Venue(tape.market, tape)
            self._tapes[tape.id] = tape
        else:
            event.mutate(self._tapes[event.originator_id])

    def _apply_order(self, event: Order.Event) -> None:
        if isinstance(event, (Order.Accepted, Order.Rejected)):
            order = _created(event, Order)
            self._orders[order.id] = order
            self.venues[order.symbol].orders[order.id] = order
            return
        order = self._orders[event.originator_id]
        event.mutate(order)
        book = self.venues[order.symbol].book
        market = self.markets[order.symbol]
        on_book = order.id in book.orders
        if isinstance(event, Order.Rested):
            assert order.price is not None
            book.place(
                order.id,
                order.account_id,
                order.side,
                market.price_to_ticks(order.price),
                market.quantity_to_lots(event.remaining),
                stp=order.stp,
                post_only=order.post_only,
            )
        elif isinstance(event, Order.PartiallyFilled) and on_book:
            resting = book.orders[order.id]
            left = resting.remaining - market.quantity_to_lots(event.quantity)
            if left:
                book.amend(order.id, None, left)
            else:
                book.cancel(order.id)
        elif isinstance(event, Order.Amended) and on_book:
            if event.priority_kept:
                book.amend(order.id, None, market.quantity_to_lots(event.remaining))
            else:
                book.cancel(order.id)
        elif isinstance(event, (Order.Cancelled, Order.Expired)) and on_book:
            book.cancel(order.id)


T = TypeVar("T")


def _created(event: Event, kind: type[T]) -> T:
    aggregate = event.mutate(None)
    if not isinstance(aggregate, kind):
        msg = f"{type(event).__qualname__} did not create a {kind.__name__}"
        raise InvariantViolation(msg)
    return aggregate
