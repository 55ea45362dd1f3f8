"""The matching engine: one order book per market, price-time priority.

It works on integers only (prices in ticks, quantities in lots, notionals in
quote units) and knows nothing of accounts' balances, events or time; the
caller (``domain.exchange``) turns its results into aggregate events. That
keeps the hot loop small enough to run hundreds of thousands of operations a
second in CPython.

Each price level is an intrusive doubly linked FIFO, so cancelling or moving
any order is O(1) plus a bisect on the sorted price ladder when a level
appears or empties.

Placing a GTC order that cannot trade, and amending an order to a price
where it cannot trade, take fast paths that skip the matching loop; they
leave the same book and return the same result as the general path (an
amended order just keeps its RestingOrder node). ``bench/bench_matching.py``
measures the engine.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Hashable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum

from domain.errors import InvalidOrder, UnknownOrder


class Side(StrEnum):
    BUY = "buy"
    SELL = "sell"


class TimeInForce(StrEnum):
    GTC = "GTC"
    IOC = "IOC"
    FOK = "FOK"


class SelfTradePrevention(StrEnum):
    """What happens when an order would trade with its own account's order."""

    CANCEL_TAKER = "cancel_taker"
    CANCEL_MAKER = "cancel_maker"
    CANCEL_BOTH = "cancel_both"


class Outcome(StrEnum):
    """How a taker's pass through the book ended."""

    FILLED = "filled"
    RESTING = "resting"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    REJECTED = "rejected"


# Reasons an order ends without filling completely.
REASON_IOC = "ioc_remainder"
REASON_FOK = "fok_not_fillable"
REASON_MARKET = "market_remainder"
REASON_POST_ONLY = "post_only_would_take"
REASON_STP_TAKER = "self_trade_prevented"
REASON_FUNDS = "funds_exhausted"

# Enum members as module globals: ``Side.BUY`` is a class attribute lookup
# through the enum metaclass (about 100 ns on CPython 3.11), a global is not.
_BUY = Side.BUY
_GTC = TimeInForce.GTC
_FOK = TimeInForce.FOK
_CANCEL_TAKER = SelfTradePrevention.CANCEL_TAKER
_CANCEL_MAKER = SelfTradePrevention.CANCEL_MAKER
_CANCEL_BOTH = SelfTradePrevention.CANCEL_BOTH
_RESTING = Outcome.RESTING
_EXPIRED = Outcome.EXPIRED
_CANCELLED = Outcome.CANCELLED
_REJECTED = Outcome.REJECTED


class RestingOrder:
    """An order on the book; also a node of its price level's FIFO."""

    __slots__ = (
        "account",
        "level",
        "next",
        "order_id",
        "post_only",
        "prev",
        "price",
        "remaining",
        "side",
        "stp",
    )

    def __init__(
        self,
        order_id: Hashable,
        account: Hashable,
        side: Side,
        price: int,
        remaining: int,
        stp: SelfTradePrevention,
        post_only: bool,
    ) -> None:
        self.order_id = order_id
        self.account = account
        self.side = side
        self.price = price
        self.remaining = remaining
        self.stp = stp
        self.post_only = post_only
        self.prev: RestingOrder | None = None
        self.next: RestingOrder | None = None
        self.level: Level | None = None


class Level:
    """All resting orders at one price, oldest first."""

    __slots__ = ("head", "price", "tail", "total")

    def __init__(self, price: int) -> None:
        self.price = price
        self.head: RestingOrder | None = None
        self.tail: RestingOrder | None = None
        self.total = 0

    def __iter__(self) -> Iterator[RestingOrder]:
        node = self.head
        while node is not None:
            yield node
            node = node.next


@dataclass(slots=True)
class Fill:
    """One trade between the taker and a resting maker, at the maker's price."""

    maker_id: Hashable
    maker_account: Hashable
    price: int
    lots: int
    maker_remaining: int


@dataclass(slots=True)
class Execution:
    """What one placement (or re-placement by amend) did to the book.

    The fast paths of ``OrderBook.place`` and ``OrderBook.amend`` build one
    without the dataclass ``__init__`` (which saves a call): a new field must
    also be set there.
    """

    outcome: Outcome = Outcome.FILLED
    reason: str | None = None
    filled_lots: int = 0
    remaining_lots: int = 0
    notional: int = 0
    fills: list[Fill] = field(default_factory=list)
    cancelled_makers: list[RestingOrder] = field(default_factory=list)


# Building a RestingOrder, a Level or an Execution field by field after
# ``object.__new__`` saves the call to ``__init__`` on the hot paths.
_new = object.__new__


class OrderBook:
    """The book of one market.

    ``quote_per_tick_lot`` is the notional, in quote units, of one lot at one
    tick; it lets orders capped by a quote amount stop exactly at that cap.
    """

    def __init__(self, quote_per_tick_lot: int = 1) -> None:
        self.quote_per_tick_lot = quote_per_tick_lot
        self.orders: dict[Hashable, RestingOrder] = {}
        self._bid_levels: dict[int, Level] = {}
        self._ask_levels: dict[int, Level] = {}
        self._bid_prices: list[int] = []  # ascending; best bid is the last
        self._ask_prices: list[int] = []  # ascending; best ask is the first

    # -- reading -----------------------------------------------------------

    def best_bid(self) -> int | None:
        return self._bid_prices[-1] if self._bid_prices else None

    def best_ask(self) -> int | None:
        return self._ask_prices[0] if self._ask_prices else None

    def depth(self, side: Side, levels: int | None = None) -> list[tuple[int, int]]:
        """(price, total lots) per level, best first."""
        if side is _BUY:
            prices = self._bid_prices[::-1]
            book = self._bid_levels
        else:
            prices = self._ask_prices[:]
            book = self._ask_levels
        if levels is not None:
            prices = prices[:levels]
        return [(price, book[price].total) for price in prices]

    def iter_orders(self, side: Side) -> Iterator[RestingOrder]:
        """Resting orders of one side in priority order."""
        if side is _BUY:
            for price in reversed(self._bid_prices):
                yield from self._bid_levels[price]
        else:
            for price in self._ask_prices:
                yield from self._ask_levels[price]

    def get(self, order_id: Hashable) -> RestingOrder:
        try:
            return self.orders[order_id]
        except KeyError:
            msg = f"order {order_id} is not on the book"
            raise UnknownOrder(msg) from None

    # -- commands ----------------------------------------------------------

    def place(
        self,
        order_id: Hashable,
        account: Hashable,
        side: Side,
        price: int | None,
        lots: int | None,
        quote_limit: int | None = None,
        tif: TimeInForce = TimeInForce.GTC,
        post_only: bool = False,
        stp: SelfTradePrevention = SelfTradePrevention.CANCEL_TAKER,
    ) -> Execution:
        """Match an incoming order and rest what is left if it may rest.

        ``price`` None makes a market order. ``lots`` caps the quantity and
        ``quote_limit`` the notional; at least one of them must be given.
        """
        orders = self.orders
        if order_id in orders:
            msg = f"order {order_id} is already on the book"
            raise InvalidOrder(msg, "duplicate_order")
        if lots is not None and price is not None and quote_limit is None:
            # A limit order: the same checks as below, in the same order.
            if lots <= 0:
                msg = "quantity and quote amount must be positive"
                raise InvalidOrder(msg)
            if price <= 0:
                msg = "price must be positive"
                raise InvalidOrder(msg, "invalid_price")
            if tif is _GTC:
                if side is _BUY:
                    opposite = self._ask_prices
                    crosses = opposite[0] <= price if opposite else False
                else:
                    opposite = self._bid_prices
                    crosses = opposite[-1] >= price if opposite else False
                if not crosses:
                    # The common case, a GTC limit order that cannot trade: it
                    # just rests. ``_rest`` and ``_rested``, inlined.
                    order: RestingOrder = _new(RestingOrder)
                    order.order_id = order_id
                    order.account = account
                    order.side = side
                    order.price = price
                    order.remaining = lots
                    order.stp = stp
                    order.post_only = post_only
                    order.next = None
                    levels = self._bid_levels if side is _BUY else self._ask_levels
                    level = levels.get(price)
                    if level is None:
                        level = levels[price] = _new(Level)
                        level.price = price
                        level.head = order
                        level.total = lots
                        order.prev = None
                        insort(self._bid_prices if side is _BUY else self._ask_prices, price)
                    else:
                        tail = level.tail
                        assert tail is not None
                        tail.next = order
                        order.prev = tail
                        level.total += lots
                    level.tail = order
                    order.level = level
                    orders[order_id] = order
                    execution: Execution = _new(Execution)
                    execution.outcome = _RESTING
                    execution.reason = None
                    execution.filled_lots = 0
                    execution.remaining_lots = lots
                    execution.notional = 0
                    execution.fills = []
                    execution.cancelled_makers = []
                    return execution
        else:
            if lots is None and quote_limit is None:
                msg = "an order needs a quantity or a quote amount"
                raise InvalidOrder(msg)
            if (lots is not None and lots <= 0) or (quote_limit is not None and quote_limit <= 0):
                msg = "quantity and quote amount must be positive"
                raise InvalidOrder(msg)
            if price is not None and price <= 0:
                msg = "price must be positive"
                raise InvalidOrder(msg, "invalid_price")
            if price is not None and quote_limit is not None:
                msg = "a quote amount is only for market orders"
                raise InvalidOrder(msg)
        execution = Execution()
        if post_only and self._crosses(side, price):
            execution.outcome = _REJECTED
            execution.reason = REASON_POST_ONLY
            execution.remaining_lots = lots or 0
            return execution
        if tif is _FOK and not self._can_fill(account, side, price, lots, quote_limit, stp):
            execution.outcome = _EXPIRED
            execution.reason = REASON_FOK
            execution.remaining_lots = lots or 0
            return execution
        remaining = self._match(account, side, price, lots, quote_limit, stp, execution)
        execution.remaining_lots = remaining
        if execution.outcome is _CANCELLED:
            return execution
        if lots is None:  # a market buy spending a quote budget
            if execution.reason == REASON_FUNDS and execution.filled_lots:
                execution.reason = None  # what is left cannot buy one more lot
            else:
                execution.outcome = _EXPIRED
                execution.reason = execution.reason or REASON_MARKET
        elif remaining == 0:
            execution.reason = None
        elif price is None:
            execution.outcome = _EXPIRED
            execution.reason = execution.reason or REASON_MARKET
        elif tif is not _GTC:
            execution.outcome = _EXPIRED
            execution.reason = REASON_IOC
        else:
            self._rest(RestingOrder(order_id, account, side, price, remaining, stp, post_only))
            execution.outcome = _RESTING
        return execution

    def cancel(self, order_id: Hashable) -> RestingOrder:
        """Take an order off the book; returns it with its unfilled quantity."""
        order = self.orders.pop(order_id, None)
        if order is None:
            msg = f"order {order_id} is not on the book"
            raise UnknownOrder(msg)
        # ``_unlink``, inlined.
        level = order.level
        assert level is not None
        prev, following = order.prev, order.next
        if prev is None:
            if following is None:  # the last order at its price: drop the level
                order.level = None
                price = level.price
                if order.side is _BUY:
                    del self._bid_levels[price]
                    prices = self._bid_prices
                else:
                    del self._ask_levels[price]
                    prices = self._ask_prices
                del prices[bisect_left(prices, price)]
                return order
            level.head = following
            following.prev = None
        else:
            prev.next = following
            if following is None:
                level.tail = prev
            else:
                following.prev = prev
        level.total -= order.remaining
        order.prev = order.next = order.level = None
        return order

    def cancel_all(self, account: Hashable) -> list[RestingOrder]:
        """Cancel every order of ``account``, in the order they were placed."""
        mine = [order for order in self.orders.values() if order.account == account]
        for order in mine:
            self.cancel(order.order_id)
        return mine

    def amend(self, order_id: Hashable, price: int | None, lots: int) -> Execution | None:
        """Change an order's price and/or open quantity.

        Reducing the quantity at the same price keeps the order's place in the
        queue and returns None. A new price or a larger quantity re-enters the
        order at the back of its new level, where it may trade at once.
        """
        orders = self.orders
        order = orders.get(order_id)
        if order is None:
            msg = f"order {order_id} is not on the book"
            raise UnknownOrder(msg)
        if lots <= 0:
            msg = "amended quantity must be positive; cancel the order instead"
            raise InvalidOrder(msg, "invalid_quantity")
        old_price = order.price
        if price is None:
            price = old_price
        elif price <= 0:
            msg = "price must be positive"
            raise InvalidOrder(msg, "invalid_price")
        level = order.level
        assert level is not None
        if price == old_price and lots <= order.remaining:
            level.total -= order.remaining - lots
            order.remaining = lots
            return None
        if order.side is _BUY:
            opposite = self._ask_prices
            if opposite and price >= opposite[0]:
                return self._reenter(order_id, order, price, lots)
            levels, prices = self._bid_levels, self._bid_prices
        else:
            opposite = self._bid_prices
            if opposite and price <= opposite[-1]:
                return self._reenter(order_id, order, price, lots)
            levels, prices = self._ask_levels, self._ask_prices
        # It cannot trade, so what cancelling and placing it again would do is
        # move it to the back of the level at ``price``: unlink and relink.
        target = levels.get(price)
        prev, following = order.prev, order.next
        if prev is None and following is None:  # alone at its price
            if target is None:
                # Reuse the level for the new price: it already holds just this
                # order. The ladder keeps its order if no price lies between.
                del levels[old_price]
                levels[price] = level
                level.price = price
                level.total += lots - order.remaining
                index = bisect_left(prices, old_price)
                if (index == 0 or prices[index - 1] < price) and (
                    index + 1 == len(prices) or price < prices[index + 1]
                ):
                    prices[index] = price
                else:
                    del prices[index]
                    insort(prices, price)
                order.price = price
                order.remaining = lots
            elif target is level:  # a larger quantity at the same price
                level.total += lots - order.remaining
                order.remaining = lots
            else:
                del levels[old_price]
                del prices[bisect_left(prices, old_price)]
                tail = target.tail
                assert tail is not None
                tail.next = order
                order.prev = tail
                target.tail = order
                target.total += lots
                order.level = target
                order.price = price
                order.remaining = lots
        else:
            if prev is None:
                level.head = following
            else:
                prev.next = following
            if following is None:
                level.tail = prev
            else:
                following.prev = prev
            level.total -= order.remaining
            if target is None:
                target = levels[price] = _new(Level)
                target.price = price
                target.head = order
                target.total = lots
                order.prev = None
                insort(prices, price)
            else:
                tail = target.tail
                assert tail is not None
                tail.next = order
                order.prev = tail
                target.total += lots
            target.tail = order
            order.next = None
            order.level = target
            order.price = price
            order.remaining = lots
        key = order.order_id
        del orders[key]  # and back in at the end, as a new order would be
        orders[key] = order
        # ``_rested(lots)``, inlined.
        execution: Execution = _new(Execution)
        execution.outcome = _RESTING
        execution.reason = None
        execution.filled_lots = 0
        execution.remaining_lots = lots
        execution.notional = 0
        execution.fills = []
        execution.cancelled_makers = []
        return execution

    def _reenter(self, order_id: Hashable, order: RestingOrder, price: int, lots: int) -> Execution:
        """An amend to a price where the order may trade: cancel, then place."""
        if order.post_only:
            msg = "the new price would take liquidity from a post-only order"
            raise InvalidOrder(msg, REASON_POST_ONLY)
        self.cancel(order_id)
        return self.place(
            order_id,
            order.account,
            order.side,
            price,
            lots,
            stp=order.stp,
            post_only=order.post_only,
        )

    # -- internals ---------------------------------------------------------

    def _crosses(self, side: Side, price: int | None) -> bool:
        if side is _BUY:
            asks = self._ask_prices
            return bool(asks) and (price is None or asks[0] <= price)
        bids = self._bid_prices
        return bool(bids) and (price is None or bids[-1] >= price)

    def _opposite(self, side: Side) -> Iterator[Level]:
        """Levels a taker on ``side`` may trade with, best first."""
        if side is _BUY:
            for price in self._ask_prices:
                yield self._ask_levels[price]
        else:
            for price in reversed(self._bid_prices):
                yield self._bid_levels[price]

    def _can_fill(
        self,
        account: Hashable,
        side: Side,
        limit: int | None,
        lots: int | None,
        quote_limit: int | None,
        stp: SelfTradePrevention,
    ) -> bool:
        """Whether a fill-or-kill order would fill completely, without trading."""
        need = lots
        budget = quote_limit
        buying = side is _BUY
        k = self.quote_per_tick_lot
        for level in self._opposite(side):
            if limit is not None and (level.price > limit if buying else level.price < limit):
                return False
            for maker in level:
                if maker.account == account:
                    if stp is _CANCEL_MAKER:
                        continue
                    return False
                take = maker.remaining if need is None else min(need, maker.remaining)
                if budget is not None:
                    take = min(take, budget // (level.price * k))
                    if take == 0:
                        return need is None
                    budget -= take * level.price * k
                if need is not None:
                    need -= take
                    if need == 0:
                        return True
        return need is None and budget == 0

    def _match(
        self,
        account: Hashable,
        side: Side,
        limit: int | None,
        lots: int | None,
        quote_limit: int | None,
        stp: SelfTradePrevention,
        execution: Execution,
    ) -> int:
        """Trade against the opposite side; returns the lots left (0 if uncapped)."""
        buying = side is _BUY
        prices = self._ask_prices if buying else self._bid_prices
        levels = self._ask_levels if buying else self._bid_levels
        orders = self.orders
        fills = execution.fills
        k = self.quote_per_tick_lot
        remaining = lots
        budget = quote_limit
        while prices:
            best = prices[0] if buying else prices[-1]
            if limit is not None and (best > limit if buying else best < limit):
                break
            level = levels[best]
            maker = level.head
            while maker is not None:
                if maker.account == account:
                    if stp is _CANCEL_TAKER:
                        execution.outcome = _CANCELLED
                        execution.reason = REASON_STP_TAKER
                        return remaining or 0
                    following = maker.next
                    self._unlink(maker)
                    del orders[maker.order_id]
                    execution.cancelled_makers.append(maker)
                    if stp is _CANCEL_BOTH:
                        execution.outcome = _CANCELLED
                        execution.reason = REASON_STP_TAKER
                        return remaining or 0
                    maker = following
                    continue
                take = maker.remaining
                if remaining is not None and remaining < take:
                    take = remaining
                if budget is not None:
                    affordable = budget // (best * k)
                    if affordable < take:
                        take = affordable
                    if take == 0:
                        execution.reason = REASON_FUNDS
                        return remaining or 0
                    budget -= take * best * k
                maker.remaining -= take
                level.total -= take
                execution.filled_lots += take
                execution.notional += take * best * k
                fills.append(Fill(maker.order_id, maker.account, best, take, maker.remaining))
                following = maker.next
                if maker.remaining == 0:
                    self._unlink(maker)
                    del orders[maker.order_id]
                if remaining is not None:
                    remaining -= take
                    if remaining == 0:
                        return 0
                maker = following
        return remaining or 0

    def _rest(self, order: RestingOrder) -> None:
        """Append ``order`` to the back of its level (and of ``orders``)."""
        price = order.price
        if order.side is _BUY:
            levels, prices = self._bid_levels, self._bid_prices
        else:
            levels, prices = self._ask_levels, self._ask_prices
        level = levels.get(price)
        if level is None:
            level = levels[price] = Level(price)
            insort(prices, price)
        tail = level.tail
        order.level = level
        order.prev = tail
        order.next = None
        if tail is None:
            level.head = order
        else:
            tail.next = order
        level.tail = order
        level.total += order.remaining
        self.orders[order.order_id] = order

    def _unlink(self, order: RestingOrder) -> None:
        """Take ``order`` out of its level, dropping the level if it empties."""
        level = order.level
        assert level is not None
        prev, following = order.prev, order.next
        if prev is None:
            level.head = following
        else:
            prev.next = following
        if following is None:
            level.tail = prev
        else:
            following.prev = prev
        level.total -= order.remaining
        order.prev = order.next = order.level = None
        if level.head is None:
            if order.side is _BUY:
                levels, prices = self._bid_levels, self._bid_prices
            else:
                levels, prices = self._ask_levels, self._ask_prices
            del levels[level.price]
            del prices[bisect_left(prices, level.price)]
