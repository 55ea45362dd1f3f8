"""Order requests, their validation against market rules, and the Order aggregate."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from uuid import UUID

from domain.aggregates import ExchangeAggregate, StampedCreated, member
from domain.errors import InvalidOrder
from domain.markets import Market
from domain.matching import SelfTradePrevention, Side, TimeInForce
from domain.money import Asset


class OrderType(StrEnum):
    LIMIT = "limit"
    MARKET = "market"


class OrderStatus(StrEnum):
    ACCEPTED = "accepted"  # funds locked, not yet through the book
    OPEN = "open"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    REJECTED = "rejected"


TERMINAL_STATUSES = frozenset(
    {OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.EXPIRED, OrderStatus.REJECTED}
)


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """An order that passed every market rule, with its grid values precomputed."""

    order_id: UUID
    account_id: UUID
    symbol: str
    side: Side
    type: OrderType
    price: Decimal | None
    quantity: Decimal | None
    quote_quantity: Decimal | None
    time_in_force: TimeInForce
    post_only: bool
    stp: SelfTradePrevention
    client_order_id: str | None
    price_ticks: int | None
    lots: int | None
    quote_units: int | None

    def reservation(self, market: Market, available: int) -> int:
        """Units of the paying asset this order must lock (``available`` for the
        one case with no bound: a market buy by base quantity may spend all of it)."""
        if self.quote_units is not None:
            return self.quote_units
        if self.price_ticks is None and self.side is Side.BUY:
            return available
        assert self.lots is not None
        return market.resting_need(self.side is Side.BUY, self.price_ticks or 0, self.lots)


def validate_order(
    market: Market,
    *,
    order_id: UUID,
    account_id: UUID,
    side: Side,
    type: OrderType,
    price: Decimal | None = None,
    quantity: Decimal | None = None,
    quote_quantity: Decimal | None = None,
    time_in_force: TimeInForce | None = None,
    post_only: bool = False,
    stp: SelfTradePrevention = SelfTradePrevention.CANCEL_TAKER,
    client_order_id: str | None = None,
) -> OrderRequest:
    """Check an order against the market's rules, or raise InvalidOrder saying why."""
    price_ticks = lots = quote_units = None
    if type is OrderType.LIMIT:
        if price is None or quantity is None:
            msg = "a limit order needs a price and a quantity"
            raise InvalidOrder(msg, "missing_field")
        if quote_quantity is not None:
            msg = "quote_quantity is only for market buys"
            raise InvalidOrder(msg)
        tif = time_in_force or TimeInForce.GTC
        if post_only and tif is not TimeInForce.GTC:
            msg = "a post-only order must be GTC"
            raise InvalidOrder(msg)
        price_ticks = market.price_to_ticks(price)
    else:
        if price is not None:
            msg = "a market order takes no price"
            raise InvalidOrder(msg)
        if post_only:
            msg = "a market order cannot be post-only"
            raise InvalidOrder(msg)
        tif = time_in_force or TimeInForce.IOC
        if tif is TimeInForce.GTC:
            msg = "a market order cannot rest: use IOC or FOK"
            raise InvalidOrder(msg)
        if (quantity is None) == (quote_quantity is None):
            msg = "a market order needs exactly one of quantity and quote_quantity"
            raise InvalidOrder(msg, "missing_field")
        if quote_quantity is not None:
            if side is not Side.BUY:
                msg = "quote_quantity is only for market buys"
                raise InvalidOrder(msg)
            if tif is TimeInForce.FOK:
                msg = "a market buy by quote_quantity cannot be FOK"
                raise InvalidOrder(msg)
            quote_units = _quote_units(market.quote, quote_quantity)
            if quote_units < market.min_notional_units:
                msg = f"quote_quantity {quote_quantity} is below the minimum {market.min_notional}"
                raise InvalidOrder(msg, "min_notional")
    if quantity is not None:
        lots = market.quantity_to_lots(quantity)
        if not market.min_lots <= lots <= market.max_lots:
            msg = f"quantity {quantity} is outside [{market.min_quantity}, {market.max_quantity}]"
            raise InvalidOrder(msg, "invalid_quantity")
    if (
        price_ticks is not None
        and lots is not None
        and market.notional_units(price_ticks, lots) < market.min_notional_units
    ):
        msg = f"price x quantity is below the minimum notional {market.min_notional}"
        raise InvalidOrder(msg, "min_notional")
    if client_order_id is not None and not (
        0 < len(client_order_id) <= 64 and client_order_id.isprintable()
    ):
        msg = "client_order_id must be 1-64 printable characters"
        raise InvalidOrder(msg)
    return OrderRequest(
        order_id=order_id,
        account_id=account_id,
        symbol=market.symbol,
        side=side,
        type=type,
        price=None if price_ticks is None else market.ticks_to_price(price_ticks),
        quantity=None if lots is None else market.lots_to_quantity(lots),
        quote_quantity=None if quote_units is None else market.quote.to_decimal(quote_units),
        time_in_force=tif,
        post_only=post_only,
        stp=stp,
        client_order_id=client_order_id,
        price_ticks=price_ticks,
        lots=lots,
        quote_units=quote_units,
    )


def _quote_units(quote: Asset, amount: Decimal) -> int:
    units = quote.to_units(amount, "quote_quantity")
    if units <= 0:
        msg = f"quote_quantity must be positive, got {amount}"
        raise InvalidOrder(msg, "invalid_quantity")
    return units


class OrderRequested(StampedCreated):
    """What both of an order's possible first events say: the order as requested."""

    account_id: UUID
    symbol: str
    side: str
    type: str
    price: Decimal | None
    quantity: Decimal | None
    quote_quantity: Decimal | None
    time_in_force: str
    post_only: bool
    stp: str
    client_order_id: str | None


class Order(ExchangeAggregate):
    """One order's life, as the matching side of its market records it."""

    TOPIC = "bitex.order"

    class Accepted(ExchangeAggregate.Event, OrderRequested):
        TOPIC = "bitex.order.Accepted"

    class Rejected(ExchangeAggregate.Event, OrderRequested):
        """Turned away before reaching the book (for example, too few funds)."""

        TOPIC = "bitex.order.Rejected"
        reason: str

        def apply(self, order: Order) -> None:
            order.status = OrderStatus.REJECTED
            order.reason = self.reason

    class Rested(ExchangeAggregate.Event):
        TOPIC = "bitex.order.Rested"
        remaining: Decimal

        def apply(self, order: Order) -> None:
            order.remaining = self.remaining
            if order.status is OrderStatus.ACCEPTED:
                order.status = OrderStatus.OPEN

    class PartiallyFilled(ExchangeAggregate.Event):
        TOPIC = "bitex.order.PartiallyFilled"
        trade_id: str
        price: Decimal
        quantity: Decimal
        notional: Decimal
        role: str
        counter_order_id: UUID

        def apply(self, order: Order) -> None:
            order.filled_quantity += self.quantity
            order.filled_notional += self.notional
            if order.remaining is not None:
                order.remaining -= self.quantity
            order.status = OrderStatus.PARTIALLY_FILLED

    class Filled(PartiallyFilled):
        TOPIC = "bitex.order.Filled"

        def apply(self, order: Order) -> None:
            super().apply(order)
            order.status = OrderStatus.FILLED
            if order.remaining is not None:
                order.remaining = order.remaining * 0

    class Cancelled(ExchangeAggregate.Event):
        TOPIC = "bitex.order.Cancelled"
        reason: str

        def apply(self, order: Order) -> None:
            order.status = OrderStatus.CANCELLED
            order.reason = self.reason

    class Expired(ExchangeAggregate.Event):
        TOPIC = "bitex.order.Expired"
        reason: str

        def apply(self, order: Order) -> None:
            order.status = OrderStatus.EXPIRED
            order.reason = self.reason

    class Amended(ExchangeAggregate.Event):
        """New price and open quantity; ``priority_kept`` says whether it kept its place."""

        TOPIC = "bitex.order.Amended"
        price: Decimal
        remaining: Decimal
        priority_kept: bool

        def apply(self, order: Order) -> None:
            order.price = self.price
            order.remaining = self.remaining

    def __init__(
        self,
        account_id: UUID,
        symbol: str,
        side: str,
        type: str,
        price: Decimal | None,
        quantity: Decimal | None,
        quote_quantity: Decimal | None,
        time_in_force: str,
        post_only: bool,
        stp: str,
        client_order_id: str | None,
    ) -> None:
        self.account_id = account_id
        self.symbol = symbol
        self.side = member(Side, side)
        self.type = member(OrderType, type)
        self.price = price
        self.quantity = quantity
        self.quote_quantity = quote_quantity
        self.time_in_force = member(TimeInForce, time_in_force)
        self.post_only = post_only
        self.stp = member(SelfTradePrevention, stp)
        self.client_order_id = client_order_id
        self.status = OrderStatus.ACCEPTED
        self.reason: str | None = None
        self.remaining = quantity
        zero = Decimal(0)
        self.filled_quantity = zero if quantity is None else quantity * 0
        self.filled_notional = zero

    @classmethod
    def accept(cls, request: OrderRequest, at: datetime) -> Order:
        return cls._create(cls.Accepted, id=request.order_id, timestamp=at, **_fields(request))

    @classmethod
    def reject(cls, request: OrderRequest, reason: str, at: datetime) -> Order:
        return cls._create(
            cls.Rejected, id=request.order_id, timestamp=at, reason=reason, **_fields(request)
        )

    @property
    def is_done(self) -> bool:
        return self.status in TERMINAL_STATUSES


def _fields(request: OrderRequest) -> dict[str, object]:
    return {
        "account_id": request.account_id,
        "symbol": request.symbol,
        "side": request.side.value,
        "type": request.type.value,
        "price": request.price,
        "quantity": request.quantity,
        "quote_quantity": request.quote_quantity,
        "time_in_force": request.time_in_force.value,
        "post_only": request.post_only,
        "stp": request.stp.value,
        "client_order_id": request.client_order_id,
    }


ORDER_EVENTS = (
    Order.Accepted,
    Order.Rejected,
    Order.Rested,
    Order.PartiallyFilled,  # and Order.Filled
    Order.Cancelled,
    Order.Expired,
    Order.Amended,
)
"""Every event an Order records (they share their Event base with the other aggregates)."""
