"""The matching engine: one order book per market, price-time priority.

It works on integers only (prices in ticks, quantities in lots, notionals in
quote units) and knows nothing of accounts' balances, events or time; the
caller (``domain.exchange``) turns its results into aggregate events. That
keeps the hot loop small enough to run hundreds of thousands of operations a
second in CPython.

Each price level is an intrusive doubly linked FIFO, so cancelling or moving
any order is O(1), plus a bisect on the sorted price ladder when an order
goes to a price that has no level yet. A level that empties stays on the
ladder, empty, until it is the best of its side or the ladder is compacted
(see ``OrderBook``).

Placing a GTC order that cannot trade, and amending an order to a price
where it cannot trade, take fast paths that skip the matching loop; they
leave the same book and return the same result as the general path (an
amended order just keeps its RestingOrder node). ``bench/bench_matching.py``
measures the engine.
"""

from __future__ import annotations

from bisect import insort
from collections.abc import Hashable, Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from itertools import islice

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
    """An order on the book; also a node of its price level's FIFO.

    The fast path of ``OrderBook.place`` builds one without ``__init__``: a
    new slot must also be set there.
    """

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


# Building a RestingOrder or an Execution field by field after
# ``object.__new__`` saves the call to ``__init__`` on the hot paths.
_new = object.__new__


# A price ladder is compacted (its empty levels dropped) when a new level would
# make it longer than _LADDER_GROWTH times the levels left by the last
# compaction, plus _MIN_LADDER; a compaction costs O(length), so it is spread
# over at least as many new levels. A larger factor keeps more empty levels
# for orders to come back to (fewer bisects and insertions) but makes a
# ladder longer to insert into and to read. On bench/bench_matching.py, 6 is
# about 9% faster than 4 and within 2% of 8; orders moved to ever new prices,
# which never come back, pay more for a larger factor.
_LADDER_GROWTH = 6
_MIN_LADDER = 64


class OrderBook:
    """The book of one market.

    ``quote_per_tick_lot`` is the notional, in quote units, of one lot at one
    tick; it lets orders capped by a quote amount stop exactly at that cap.

    The price ladder of each side is a dict from price to Level and a sorted
    list of its keys, with the best price last: ``_bid_prices`` holds the bid
    prices ascending and ``_ask_prices`` the ask prices negated, so taking off
    the best level is a ``list.pop()`` and a level near the touch moves little
    of the list. A level that empties stays in both, empty, unless it is the
    best of its side: orders come back to a recent price often, and dropping
    it would cost a bisect. So the best level is never empty, readers skip the
    empty ones, and a ladder is swept of them when it grows (``_compact``).
    """

    def __init__(self, quote_per_tick_lot: int = 1) -> None:
        self.quote_per_tick_lot = quote_per_tick_lot
        self.orders: dict[Hashable, RestingOrder] = {}
        self._bid_levels: dict[int, Level] = {}
        self._ask_levels: dict[int, Level] = {}
        self._bid_prices: list[int] = []  # ascending; the best bid is the last
        self._ask_prices: list[int] = []  # negated asks, ascending; the best is the last
        self._bid_limit = _MIN_LADDER  # the ladder lengths that call for a compaction
        self._ask_limit = _MIN_LADDER

    # -- reading -----------------------------------------------------------

    def best_bid(self) -> int | None:
        return self._bid_prices[-1] if self._bid_prices else None

    def best_ask(self) -> int | None:
        return -self._ask_prices[-1] if self._ask_prices else None

    def depth(self, side: Side, levels: int | None = None) -> list[tuple[int, int]]:
        """(price, total lots) per level, best first."""
        best_first: Iterable[Level] = self._levels(side is _BUY)
        if levels is not None and levels >= 0:
            best_first = islice(best_first, levels)
        found = [(level.price, level.total) for level in best_first]
        return found if levels is None or levels >= 0 else found[:levels]

    def iter_orders(self, side: Side) -> Iterator[RestingOrder]:
        """Resting orders of one side in priority order."""
        for level in self._levels(side is _BUY):
            yield from level

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
                    crosses = -opposite[-1] <= price if opposite else False
                    levels = self._bid_levels
                else:
                    opposite = self._bid_prices
                    crosses = opposite[-1] >= price if opposite else False
                    levels = self._ask_levels
                if not crosses:
                    # The common case, a GTC limit order that cannot trade: it
                    # just rests (``_rest``, inlined).
                    level = levels.get(price)
                    if level is None:
                        level = self._new_level(side is _BUY, price)
                    order: RestingOrder = _new(RestingOrder)
                    order.order_id = order_id
                    order.account = account
                    order.side = side
                    order.price = price
                    order.remaining = lots
                    order.stp = stp
                    order.post_only = post_only
                    order.level = level
                    order.next = None
                    tail = order.prev = level.tail
                    if tail is None:
                        level.head = order
                    else:
                        tail.next = order
                    level.tail = order
                    level.total += lots
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
        self._unlink(order)
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
            if opposite and price >= -opposite[-1]:
                return self._reenter(order_id, order, price, lots)
            buying = True
            target = self._bid_levels.get(price)
        else:
            opposite = self._bid_prices
            if opposite and price <= opposite[-1]:
                return self._reenter(order_id, order, price, lots)
            buying = False
            target = self._ask_levels.get(price)
        # It cannot trade, so what cancelling and placing it again would do is
        # move it to the back of the level at ``price``: unlink and relink.
        following = order.next
        if target is level and following is None:  # more lots, already at the back
            level.total += lots - order.remaining
            order.remaining = lots
        else:
            prev = order.prev
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
                target = self._new_level(buying, price)
            tail = order.prev = target.tail
            if tail is None:
                target.head = order
            else:
                tail.next = order
            order.next = None
            target.tail = order
            target.total += lots
            order.level = target
            order.price = price
            order.remaining = lots
            if level.head is None:  # the old level emptied: drop it if it was the best
                if buying:
                    if self._bid_prices[-1] == old_price:
                        self._drop_empty_best(True)
                elif self._ask_prices[-1] == -old_price:
                    self._drop_empty_best(False)
        key = order.order_id
        del orders[key]  # and back in at the end, as a new order would be
        orders[key] = order
        execution: Execution = _new(Execution)
        execution.outcome = _RESTING
        execution.reason = None
        execution.filled_lots = 0
        execution.remaining_lots = lots
        execution.notional = 0
        execution.fills = []
        execution.cancelled_makers = []
        return execution

    # -- internals ---------------------------------------------------------

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

    def _crosses(self, side: Side, price: int | None) -> bool:
        if side is _BUY:
            asks = self._ask_prices
            return bool(asks) and (price is None or -asks[-1] <= price)
        bids = self._bid_prices
        return bool(bids) and (price is None or bids[-1] >= price)

    def _levels(self, bids: bool) -> Iterator[Level]:
        """The non-empty levels of one side, best first."""
        if bids:
            levels = self._bid_levels
            for price in reversed(self._bid_prices):
                level = levels[price]
                if level.head is not None:
                    yield level
        else:
            levels = self._ask_levels
            for key in reversed(self._ask_prices):
                level = levels[-key]
                if level.head is not None:
                    yield level

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
        for level in self._levels(not buying):  # what it may trade with, best first
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
        while prices:  # the best level is never empty; it goes when it empties
            best = -prices[-1] if buying else prices[-1]
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
        buying = order.side is _BUY
        level = (self._bid_levels if buying else self._ask_levels).get(price)
        if level is None:
            level = self._new_level(buying, price)
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
        """Take ``order`` out of its level, dropping the level if it was the
        best of its side and empties."""
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
                if self._bid_prices[-1] == level.price:
                    self._drop_empty_best(True)
            elif self._ask_prices[-1] == -level.price:
                self._drop_empty_best(False)

    def _new_level(self, bids: bool, price: int) -> Level:
        """An empty level at ``price`` on one side, in its ladder."""
        if bids:
            levels, prices = self._bid_levels, self._bid_prices
            if len(prices) >= self._bid_limit:
                self._bid_limit = self._compact(levels, prices, 1)
            insort(prices, price)
        else:
            levels, prices = self._ask_levels, self._ask_prices
            if len(prices) >= self._ask_limit:
                self._ask_limit = self._compact(levels, prices, -1)
            insort(prices, -price)
        level = levels[price] = Level(price)
        return level

    def _drop_empty_best(self, bids: bool) -> None:
        """Drop the empty levels at the best end of one side's ladder."""
        if bids:
            levels, prices = self._bid_levels, self._bid_prices
            while prices and levels[prices[-1]].head is None:
                del levels[prices.pop()]
        else:
            levels, prices = self._ask_levels, self._ask_prices
            while prices and levels[-prices[-1]].head is None:
                del levels[-prices.pop()]

    @staticmethod
    def _compact(levels: dict[int, Level], prices: list[int], sign: int) -> int:
        """Drop every empty level of a ladder; returns its next length limit."""
        live = [(price, level) for price, level in levels.items() if level.head is not None]
        levels.clear()
        levels.update(live)
        prices[:] = sorted(levels) if sign > 0 else sorted([-price for price in levels])
        return _LADDER_GROWTH * len(prices) + _MIN_LADDER
