"""How an account answers its orders' events: settle fills, release, re-reserve.

The in-process Exchange and the account processor both call this, so the
distributed system settles exactly as the reference does.
"""

from __future__ import annotations

from uuid import UUID

from eventsourcing.domain import CanMutateAggregate

from domain.accounts import Account, SettlementFill
from domain.markets import Market
from domain.matching import Side
from domain.orders import Order

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
