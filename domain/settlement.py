"""How an account answers its orders' events: settle fills, release, re-reserve.

The in-process Exchange and the account processor both call this, so the
distributed system settles exactly as the reference does.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from uuid import UUID

from eventsourcing.domain import CanMutateAggregate

from domain.accounts import Account, SettlementFill
from domain.errors import InsufficientFunds, InvalidOrder
from domain.markets import Market
from domain.matching import Side
from domain.orders import Order, OrderRequest

SETTLING_EVENTS = (Order.PartiallyFilled, Order.Cancelled, Order.Expired, Order.Amended)
"""Order events an account must act on (``Filled`` is a ``PartiallyFilled``)."""


def settle_order_event(account: Account, market: Market, event: CanMutateAggregate[UUID]) -> None:
    """Apply one order event to the account that owns the order."""
    order_id = event.originator_id
    at = event.timestamp
    if isinstance(event, Order.PartiallyFilled):
        reservation = account.reservations[order_id]
        fill = SettlementFill(
            order_id=order_id,
            trade_id=event.trade_id,
            symbol=market.symbol,
            side=reservation.side,
            is_maker=event.role == "maker",
            price_ticks=market.price_to_ticks(event.price),
            lots=market.quantity_to_lots(event.quantity),
        )
        account.settle(fill, market, at)
        if isinstance(event, Order.Filled):
            account.release(order_id, market, "filled", at)
    elif isinstance(event, (Order.Cancelled, Order.Expired)):
        account.release(order_id, market, event.reason, at)
    elif isinstance(event, Order.Amended):
        reservation = account.reservations[order_id]
        ticks = market.price_to_ticks(event.price)
        lots = market.quantity_to_lots(event.remaining)
        need = market.resting_need(reservation.side is Side.BUY, ticks, lots)
        account.adjust(order_id, market, need, event.price, at)


def lock_for_order(account: Account, market: Market, request: OrderRequest, at: datetime) -> int:
    """Lock what a new order needs and return it, or record a refusal and return 0."""
    paying = market.quote if request.side is Side.BUY else market.base
    funds = request.reservation(market, account.available(paying))
    try:
        account.lock(request.order_id, market, request.side, funds, request.price, at)
    except InsufficientFunds as refusal:
        account.refuse(request.order_id, refusal.code, at)
        return 0
    return funds


def amend_needs(
    account: Account, market: Market, order_id: UUID, price: Decimal | None, quantity: Decimal
) -> tuple[int, Decimal | None]:
    """What an open order will need after an amend, and its limit price then."""
    reservation = account.reservation(order_id)
    limit = price if price is not None else reservation.limit_price
    if limit is None:
        msg = f"order {order_id} has no price to amend"
        raise InvalidOrder(msg)
    ticks = market.price_to_ticks(limit)
    lots = market.quantity_to_lots(quantity)
    if lots > market.max_lots:
        msg = f"quantity {quantity} is above the maximum {market.max_quantity}"
        raise InvalidOrder(msg, "invalid_quantity")
    return market.resting_need(reservation.side is Side.BUY, ticks, lots), limit


def prelock_for_amend(
    account: Account,
    market: Market,
    order_id: UUID,
    price: Decimal | None,
    quantity: Decimal,
    at: datetime,
) -> int:
    """Lock in advance what an amend adds to an order's needs; returns the units locked.

    The order is marked as amending until the book's answer comes back: an
    ``Amended`` event sets the reservation to exactly what the order needs, a
    refusal (``undo_prelock``) gives the extra back. Until then a second amend
    is refused, so two amends never race over the same funds.
    """
    need, _ = amend_needs(account, market, order_id, price, quantity)
    extra = max(0, need - account.reservation(order_id).units)
    account.request_amend(order_id, market, extra, at)
    return extra


def undo_prelock(
    account: Account, market: Market, order_id: UUID, units: int, at: datetime
) -> None:
    """Give back what was locked for an amend the book refused (if the order is still open)."""
    reservation = account.reservations.get(order_id)
    if reservation is not None and reservation.amending is not None:
        account.adjust(
            order_id, market, reservation.units - reservation.amending, reservation.limit_price, at
        )


def remaining_lots(account: Account, market: Market, order_id: UUID) -> int:
    """The open quantity of an order as its account knows it (fills may be in flight)."""
    reservation = account.reservation(order_id)
    if reservation.side is Side.SELL:
        return reservation.units // market.base_units_per_lot
    assert reservation.limit_price is not None, "only limit orders rest"
    per_lot = market.notional_units(market.price_to_ticks(reservation.limit_price), 1)
    return reservation.units // per_lot
