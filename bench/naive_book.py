"""A deliberately plain reference order book: a sorted list per side and a dict.

It is the yardstick for ``bench_matching``: the same semantics as
``domain.matching.OrderBook`` for what the benchmark uses (limit GTC and IOC,
price-time priority, trades at the maker's price, self-trade prevention by
cancelling the taker, cancel, and amend: a smaller quantity at the same price
keeps priority, anything else re-enters at the back and may trade), written the
obvious way, without the engine's price ladder and linked price levels.

Each side is one Python list of orders kept sorted by priority with
``bisect.insort`` (best first), plus a dict from order id to order. Matching
walks the opposite list from the front; a cancel removes the order with
``list.remove``, a linear scan.
"""

from __future__ import annotations

from bisect import insort
from itertools import count
from operator import attrgetter

from domain.matching import Side

# (maker id, price, lots, maker's remaining lots after the trade)
NaiveFill = tuple[int, int, int, int]


class NaiveOrder:
    __slots__ = ("account", "order_id", "price", "priority", "remaining", "side")

    def __init__(
        self, order_id: int, account: int, side: Side, price: int, remaining: int, seq: int
    ) -> None:
        self.order_id = order_id
        self.account = account
        self.side = side
        self.price = price
        self.remaining = remaining
        # Sorting key, best first: highest bid, lowest ask, then oldest.
        self.priority = (-price if side is _BUY else price, seq)


_priority = attrgetter("priority")
_BUY = Side.BUY  # a global: ``Side.BUY`` costs an enum class lookup each time


class NaiveBook:
    def __init__(self) -> None:
        self.orders: dict[int, NaiveOrder] = {}
        self.bids: list[NaiveOrder] = []
        self.asks: list[NaiveOrder] = []
        self._seq = count()

    def best_bid(self) -> int | None:
        return self.bids[0].price if self.bids else None

    def best_ask(self) -> int | None:
        return self.asks[0].price if self.asks else None

    def place(
        self, order_id: int, account: int, side: Side, price: int, lots: int, ioc: bool = False
    ) -> list[NaiveFill]:
        """Match a limit order; rest what is left unless IOC. Returns the fills."""
        if order_id in self.orders:
            msg = f"order {order_id} is already on the book"
            raise ValueError(msg)
        buying = side is _BUY
        opposite = self.asks if buying else self.bids
        fills: list[NaiveFill] = []
        remaining = lots
        while remaining and opposite:
            maker = opposite[0]
            if maker.price > price if buying else maker.price < price:
                break
            if maker.account == account:  # self-trade prevention: cancel the taker
                return fills
            take = min(remaining, maker.remaining)
            maker.remaining -= take
            remaining -= take
            fills.append((maker.order_id, maker.price, take, maker.remaining))
            if maker.remaining == 0:
                opposite.pop(0)
                del self.orders[maker.order_id]
        if remaining and not ioc:
            order = NaiveOrder(order_id, account, side, price, remaining, next(self._seq))
            insort(self.bids if buying else self.asks, order, key=_priority)
            self.orders[order_id] = order
        return fills

    def cancel(self, order_id: int) -> NaiveOrder:
        order = self.orders.pop(order_id)
        (self.bids if order.side is _BUY else self.asks).remove(order)
        return order

    def amend(self, order_id: int, price: int, lots: int) -> list[NaiveFill] | None:
        """Reduce in place (None), or re-enter at the back of ``price``."""
        order = self.orders[order_id]
        if price == order.price and lots <= order.remaining:
            order.remaining = lots
            return None
        self.cancel(order_id)
        return self.place(order_id, order.account, order.side, price, lots)
