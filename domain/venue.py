"""The matching side of one market: its book, its orders and its trade tape.

A Venue turns what the engine did into events: order lifecycle events on
each Order aggregate and one ``TradeExecuted`` per trade on the market's
TradeTape, whose version is the trade's sequence number.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from eventsourcing.domain import CanMutateAggregate

from domain.aggregates import ExchangeAggregate, StampedCreated, market_id_for
from domain.errors import InvalidOrder, UnknownOrder
from domain.markets import DECIMAL_FIELDS, Market, market_fields, market_from_fields
from domain.matching import Execution, OrderBook, Outcome, Side
from domain.orders import Order, OrderRequest


class TradeTape(ExchangeAggregate):
    """The market's sequence of trades (the article's market events).

    It begins with the market's listing: ``Listed`` carries every rule of the
    market, so the log alone says which markets exist and how they trade.
    """

    TOPIC = "bitex.market"

    class Listed(ExchangeAggregate.Event, StampedCreated):
        TOPIC = "bitex.market.Listed"
        symbol: str
        base: str
        base_scale: int
        quote: str
        quote_scale: int
        tick_size: Decimal
        lot_size: Decimal
        min_quantity: Decimal
        max_quantity: Decimal
        min_notional: Decimal
        maker_fee: Decimal
        taker_fee: Decimal

    class TradeExecuted(ExchangeAggregate.Event):
        TOPIC = "bitex.market.TradeExecuted"
        trade_id: str
        price: Decimal
        quantity: Decimal
        taker_side: str
        taker_order_id: UUID
        maker_order_id: UUID

        def apply(self, tape: TradeTape) -> None:
            tape.last_price = self.price

    def __init__(
        self,
        symbol: str,
        base: str,
        base_scale: int,
        quote: str,
        quote_scale: int,
        tick_size: Decimal,
        lot_size: Decimal,
        min_quantity: Decimal,
        max_quantity: Decimal,
        min_notional: Decimal,
        maker_fee: Decimal,
        taker_fee: Decimal,
    ) -> None:
        self.market = market_from_fields(
            {
                "base": base,
                "base_scale": base_scale,
                "quote": quote,
                "quote_scale": quote_scale,
                "tick_size": tick_size,
                "lot_size": lot_size,
                "min_quantity": min_quantity,
                "max_quantity": max_quantity,
                "min_notional": min_notional,
                "maker_fee": maker_fee,
                "taker_fee": taker_fee,
            }
        )
        if self.market.symbol != symbol:
            msg = f"a listing of {symbol} defines {self.market.symbol}"
            raise ValueError(msg)
        self.symbol = symbol
        self.last_price: Decimal | None = None

    @classmethod
    def open(cls, market: Market, at: datetime) -> TradeTape:
        """List ``market``: its tape's id is derived from its symbol."""
        return cls._create(
            cls.Listed,
            id=market_id_for(market.symbol),
            symbol=market.symbol,
            timestamp=at,
            **cls.listing(market),
        )

    @staticmethod
    def listing(market: Market) -> dict[str, Any]:
        """The fields of ``Listed`` that define ``market`` (decimals without trailing zeros)."""
        spec: dict[str, Any] = dict(market_fields(market))
        for name in DECIMAL_FIELDS:
            spec[name] = Decimal(str(spec[name]))
        return spec

    def next_trade_id(self) -> str:
        return f"{self.symbol}:{self.version}"


Event = CanMutateAggregate[UUID]


class Venue:
    """One market's matching side; one writer owns it."""

    def __init__(self, market: Market, tape: TradeTape) -> None:
        self.market = market
        self.tape = tape
        self.book = OrderBook(market.quote_units_per_tick_lot)
        self.orders: dict[UUID, Order] = {}
        self._pending: list[Event] = []

    @classmethod
    def open(cls, market: Market, at: datetime) -> Venue:
        venue = cls(market, TradeTape.open(market, at))
        venue._collect(venue.tape)
        return venue

    def collect_events(self) -> list[Event]:
        """Events in the order they happened, across this venue's aggregates."""
        events, self._pending = self._pending, []
        return events

    # -- commands ----------------------------------------------------------

    def reject(self, request: OrderRequest, reason: str, at: datetime) -> Order:
        order = Order.reject(request, reason, at)
        self.orders[order.id] = order
        self._collect(order)
        return order

    def submit(self, request: OrderRequest, funds: int, at: datetime) -> Order:
        """Run an order whose funds are locked through the book.

        ``funds`` is its reservation: a market buy by quantity may not spend more.
        """
        if request.order_id in self.orders:
            msg = f"order {request.order_id} was already submitted"
            raise InvalidOrder(msg, "duplicate_order")
        order = Order.accept(request, at)
        self.orders[order.id] = order
        self._collect(order)
        quote_limit = request.quote_units
        if request.side is Side.BUY and request.price_ticks is None and request.lots is not None:
            quote_limit = funds
        execution = self.book.place(
            order.id,
            request.account_id,
            request.side,
            request.price_ticks,
            request.lots,
            quote_limit,
            request.time_in_force,
            request.post_only,
            request.stp,
        )
        self._record_execution(order, execution, at)
        return order

    def cancel(self, account_id: UUID, order_id: UUID, reason: str, at: datetime) -> Order:
        order = self.owned_order(account_id, order_id)
        if order.id not in self.book.orders:
            msg = f"order {order_id} is {order.status.value}, not open"
            raise UnknownOrder(msg, "order_not_open")
        self.book.cancel(order.id)
        order._record(Order.Cancelled, at, reason=reason)
        self._collect(order)
        return order

    def cancel_all(self, account_id: UUID, reason: str, at: datetime) -> list[Order]:
        cancelled = []
        for resting in self.book.cancel_all(account_id):
            order = self.orders[resting.order_id]  # type: ignore[index]
            order._record(Order.Cancelled, at, reason=reason)
            self._collect(order)
            cancelled.append(order)
        return cancelled

    def check_amend(
        self,
        account_id: UUID,
        order_id: UUID,
        price: Decimal | None,
        quantity: Decimal,
        expected_lots: int | None = None,
    ) -> tuple[int, int]:
        """Validate an amend without changing anything: (price ticks, lots).

        ``expected_lots`` is the open quantity the amend was decided on; if the
        order traded since, the amend is refused rather than applied to a
        quantity its account did not lock funds for.
        """
        order = self.owned_order(account_id, order_id)
        if order.id not in self.book.orders:
            msg = f"order {order_id} is {order.status.value}, not open"
            raise UnknownOrder(msg, "order_not_open")
        resting = self.book.orders[order.id]
        if expected_lots is not None and resting.remaining != expected_lots:
            msg = f"order {order_id} traded while the amend was on its way; amend again"
            raise InvalidOrder(msg, "order_changed")
        ticks = resting.price if price is None else self.market.price_to_ticks(price)
        lots = self.market.quantity_to_lots(quantity)
        if lots > self.market.max_lots:
            msg = f"quantity {quantity} is above the maximum {self.market.max_quantity}"
            raise InvalidOrder(msg, "invalid_quantity")
        if resting.post_only and ticks != resting.price:
            best = self.book.best_ask() if resting.side is Side.BUY else self.book.best_bid()
            if best is not None and (ticks >= best if resting.side is Side.BUY else ticks <= best):
                msg = "the new price would take liquidity from a post-only order"
                raise InvalidOrder(msg, "post_only_would_take")
        return ticks, lots

    def amend(
        self,
        account_id: UUID,
        order_id: UUID,
        price: Decimal | None,
        quantity: Decimal,
        at: datetime,
        expected_lots: int | None = None,
    ) -> Order:
        ticks, lots = self.check_amend(account_id, order_id, price, quantity, expected_lots)
        order = self.orders[order_id]
        execution = self.book.amend(order.id, ticks, lots)
        order._record(
            Order.Amended,
            at,
            price=self.market.ticks_to_price(ticks),
            remaining=self.market.lots_to_quantity(lots),
            priority_kept=execution is None,
        )
        self._collect(order)
        if execution is not None:
            self._record_execution(order, execution, at)
        return order

    # -- reading -----------------------------------------------------------

    def owned_order(self, account_id: UUID, order_id: UUID) -> Order:
        """The order if it is this account's; anyone else's is as good as unknown."""
        order = self.orders.get(order_id)
        if order is None or order.account_id != account_id:
            msg = f"no order {order_id}"
            raise UnknownOrder(msg)
        return order

    # -- internals ---------------------------------------------------------

    def _record_execution(self, taker: Order, execution: Execution, at: datetime) -> None:
        market = self.market
        for maker in execution.cancelled_makers:
            maker_order = self.orders[maker.order_id]  # type: ignore[index]
            maker_order._record(Order.Cancelled, at, reason="self_trade_prevented")
            self._collect(maker_order)
        last = len(execution.fills) - 1
        for index, fill in enumerate(execution.fills):
            trade_id = self.tape.next_trade_id()
            price = market.ticks_to_price(fill.price)
            quantity = market.lots_to_quantity(fill.lots)
            notional = market.quote.to_decimal(market.notional_units(fill.price, fill.lots))
            maker_id: UUID = fill.maker_id  # type: ignore[assignment]
            self.tape._record(
                TradeTape.TradeExecuted,
                at,
                trade_id=trade_id,
                price=price,
                quantity=quantity,
                taker_side=taker.side.value,
                taker_order_id=taker.id,
                maker_order_id=maker_id,
            )
            self._collect(self.tape)
            maker_order = self.orders[maker_id]
            maker_event = Order.Filled if fill.maker_remaining == 0 else Order.PartiallyFilled
            maker_order._record(
                maker_event,
                at,
                trade_id=trade_id,
                price=price,
                quantity=quantity,
                notional=notional,
                role="maker",
                counter_order_id=taker.id,
            )
            self._collect(maker_order)
            taker_done = index == last and execution.outcome is Outcome.FILLED
            taker._record(
                Order.Filled if taker_done else Order.PartiallyFilled,
                at,
                trade_id=trade_id,
                price=price,
                quantity=quantity,
                notional=notional,
                role="taker",
                counter_order_id=maker_id,
            )
            self._collect(taker)
        outcome = execution.outcome
        if outcome is Outcome.RESTING:
            remaining = market.lots_to_quantity(execution.remaining_lots)
            taker._record(Order.Rested, at, remaining=remaining)
        elif outcome is Outcome.EXPIRED:
            taker._record(Order.Expired, at, reason=execution.reason)
        elif outcome in (Outcome.CANCELLED, Outcome.REJECTED):
            taker._record(Order.Cancelled, at, reason=execution.reason)
        self._collect(taker)

    def _collect(self, aggregate: ExchangeAggregate) -> None:
        self._pending.extend(aggregate.collect_events())
