"""Rebuild a whole domain state from its events, in log order.

Users, accounts, orders and trade tapes are rebuilt by their own events; each book
is rebuilt from its orders' events through the engine's public operations, so
that price-time priority comes out exactly as it was. Version gaps or forks
raise, because an aggregate refuses an event that is not its next.
"""

from __future__ import annotations

from collections.abc import Callable
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
        self._steps: dict[type, Callable[[Event], None]] = {}
        self.events_applied = 0

    def adopt(self, venue: Venue) -> None:
        """Take over a venue restored from a snapshot, and go on from there."""
        self.markets[venue.market.symbol] = venue.market
        self.venues[venue.market.symbol] = venue
        self._tapes[venue.tape.id] = venue.tape
        self._orders.update(venue.orders)

    def apply(self, event: Event) -> None:
        kind = type(event)
        step = self._steps.get(kind)
        if step is None:
            step = self._steps[kind] = self._step_for(kind)
        step(event)
        self.events_applied += 1

    def _step_for(self, kind: type) -> Callable[[Event], None]:
        """How events of ``kind`` are applied (found once per class: a replay applies
        millions of events of a dozen classes)."""
        if issubclass(kind, Account.Event):
            return self._open_account if issubclass(kind, Account.Opened) else self._account
        if issubclass(kind, Order.Event):
            if issubclass(kind, (Order.Accepted, Order.Rejected)):
                return self._create_order
            if issubclass(kind, Order.Rested):
                return self._rest
            if issubclass(kind, Order.PartiallyFilled):  # and Order.Filled
                return self._fill
            if issubclass(kind, Order.Amended):
                return self._amend
            if issubclass(kind, (Order.Cancelled, Order.Expired)):
                return self._end
            return self._order
        if issubclass(kind, TradeTape.Event):
            return self._list if issubclass(kind, TradeTape.Listed) else self._tape
        if issubclass(kind, User.Registered):
            return self._register
        if issubclass(kind, USER_EVENTS):
            return self._user
        return self._unknown

    def _unknown(self, event: Event) -> None:
        msg = f"cannot replay {type(event).__qualname__}"
        raise InvariantViolation(msg)

    def _open_account(self, event: Event) -> None:
        self.accounts[event.originator_id] = _created(event, Account)

    def _account(self, event: Event) -> None:
        event.mutate(self.accounts[event.originator_id])

    def _register(self, event: Event) -> None:
        self.users[event.originator_id] = _created(event, User)

    def _user(self, event: Event) -> None:
        event.mutate(self.users[event.originator_id])

    def _list(self, event: Event) -> None:
        tape = _created(event, TradeTape)
        known = self.markets.setdefault(tape.symbol, tape.market)
        if known != tape.market:
            msg = f"{tape.symbol} is listed as {tape.market}, known as {known}"
            raise InvariantViolation(msg)
        self.venues[tape.symbol] = Venue(tape.market, tape)
        self._tapes[tape.id] = tape

    def _tape(self, event: Event) -> None:
        event.mutate(self._tapes[event.originator_id])

    # -- orders: each event through the aggregate, then its book --------------------

    def _create_order(self, event: Event) -> None:
        order = _created(event, Order)
        self._orders[order.id] = order
        self.venues[order.symbol].orders[order.id] = order

    def _order(self, event: Event) -> None:
        self._applied(event)

    def _applied(self, event: Event) -> Order:
        """The event's order, with the event applied."""
        order = self._orders[event.originator_id]
        event.mutate(order)
        return order

    def _rest(self, event: Event) -> None:
        assert isinstance(event, Order.Rested)
        order = self._applied(event)
        market = self.markets[order.symbol]
        assert order.price is not None
        self.venues[order.symbol].book.place(
            order.id,
            order.account_id,
            order.side,
            market.price_to_ticks(order.price),
            market.quantity_to_lots(event.remaining),
            stp=order.stp,
            post_only=order.post_only,
        )

    def _fill(self, event: Event) -> None:
        assert isinstance(event, Order.PartiallyFilled)
        order = self._applied(event)
        book = self.venues[order.symbol].book
        resting = book.orders.get(order.id)
        if resting is not None:
            left = resting.remaining - self.markets[order.symbol].quantity_to_lots(event.quantity)
            if left:
                book.amend(order.id, None, left)
            else:
                book.cancel(order.id)

    def _amend(self, event: Event) -> None:
        assert isinstance(event, Order.Amended)
        order = self._applied(event)
        book = self.venues[order.symbol].book
        if order.id in book.orders:
            if event.priority_kept:
                lots = self.markets[order.symbol].quantity_to_lots(event.remaining)
                book.amend(order.id, None, lots)
            else:
                book.cancel(order.id)

    def _end(self, event: Event) -> None:
        order = self._applied(event)
        book = self.venues[order.symbol].book
        if order.id in book.orders:
            book.cancel(order.id)


T = TypeVar("T")


def _created(event: Event, kind: type[T]) -> T:
    aggregate = event.mutate(None)
    if not isinstance(aggregate, kind):
        msg = f"{type(event).__qualname__} did not create a {kind.__name__}"
        raise InvariantViolation(msg)
    return aggregate
