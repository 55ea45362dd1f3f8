"""The Redis projection's pure logic: book levels from order events, and the 24h ticker.

The book is checked against the matching engine itself: the in-process
Exchange runs a workload, and the levels folded from its order events, batch
by batch (with order state round-tripped through its Redis hash form in
between, as the projection stores it), must equal the engine's depth.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from uuid import UUID

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.exchange import Exchange
from domain.markets import demo_markets
from domain.matching import Side
from domain.orders import OrderType
from domain.venue import Event, Venue
from projections.redis_projection import (
    ASKS,
    BIDS,
    ORDER_EVENTS,
    BookChanges,
    BookInconsistent,
    Minute,
    OrderState,
    TickerWindow,
    Trade,
    apply_deltas,
    best_prices,
    market_formats,
    minute_of,
)
from tests.workload import T0, Workload, apply_to_exchange

MARKETS = demo_markets()
FORMATS = market_formats(MARKETS)


class Store:
    """What the projection keeps in Redis for the books, held in memory."""

    def __init__(self) -> None:
        self.orders: dict[UUID, dict[str, str]] = {}
        self.levels: dict[tuple[str, str], dict[str, Decimal]] = {
            (symbol, side): {} for symbol in MARKETS for side in (BIDS, ASKS)
        }

    def apply(self, events: Sequence[Event]) -> dict[tuple[str, str], dict[str, Decimal]]:
        """One batch, as the projection applies it; the changed levels by market and side."""
        orders = [e for e in events if isinstance(e, ORDER_EVENTS)]
        first: dict[UUID, int] = {}
        for event in orders:
            first.setdefault(event.originator_id, event.originator_version)
        known = {
            order_id: OrderState.from_hash(self.orders.get(order_id, {}))
            for order_id, version in first.items()
            if version > 1
        }
        changes = BookChanges(FORMATS, known)
        for event in orders:
            changes.apply(event.originator_id, event)
        for order_id in changes.changed:
            state = changes.orders[order_id]
            if state is None:
                self.orders.pop(order_id, None)
            else:
                self.orders[order_id] = state.to_hash(FORMATS[state.symbol])
        changed = {}
        for symbol, sides in changes.deltas.items():
            for side, deltas in sides.items():
                changed[symbol, side] = apply_deltas(self.levels[symbol, side], deltas)
        return changed


def engine_depth(venue: Venue) -> dict[str, dict[str, Decimal]]:
    market, fmt = venue.market, FORMATS[venue.market.symbol]
    return {
        name: {
            fmt.price(market.ticks_to_price(ticks)): market.lots_to_quantity(lots)
            for ticks, lots in venue.book.depth(side)
        }
        for name, side in ((BIDS, Side.BUY), (ASKS, Side.SELL))
    }


def assert_books_equal(store: Store, venues: dict[str, Venue]) -> None:
    for symbol, venue in venues.items():
        depth = engine_depth(venue)
        assert store.levels[symbol, BIDS] == depth[BIDS], symbol
        assert store.levels[symbol, ASKS] == depth[ASKS], symbol


def assert_orders_equal(store: Store, venues: dict[str, Venue]) -> None:
    """Once every command is through, the orders kept are exactly those on the books."""
    on_books = {}
    for venue in venues.values():
        market, fmt = venue.market, FORMATS[venue.market.symbol]
        for order_id, resting in venue.book.orders.items():
            on_books[order_id] = {
                "symbol": market.symbol,
                "side": resting.side.value,
                "price": fmt.price(market.ticks_to_price(resting.price)),
                "account_id": str(resting.account),
                "remaining": fmt.quantity(market.lots_to_quantity(resting.remaining)),
            }
    assert store.orders == on_books


def run(seed: int, commands: int) -> tuple[Exchange, list[list[Event]]]:
    """The workload through the in-process exchange: the events of each command."""
    exchange = Exchange(MARKETS, T0)
    exchange.collect_events()
    workload = Workload(seed=seed, owners=10)
    per_command = []
    for command in workload.opening() + workload.trading(commands):
        apply_to_exchange(exchange, command)
        per_command.append(exchange.collect_events())
    return exchange, per_command


@functools.cache
def recorded_run() -> tuple[Exchange, list[Event]]:
    exchange, per_command = run(seed=11, commands=1500)
    return exchange, [event for events in per_command for event in events]


def test_levels_equal_the_engine_depth_after_every_command() -> None:
    exchange = Exchange(MARKETS, T0)
    exchange.collect_events()
    store = Store()
    workload = Workload(seed=3, owners=8)
    kinds: set[str] = set()
    for command in workload.opening() + workload.trading(800):
        apply_to_exchange(exchange, command)
        events = exchange.collect_events()
        kinds.update(type(e).__qualname__ for e in events)
        store.apply(events)
        assert_books_equal(store, exchange.venues)
    assert_orders_equal(store, exchange.venues)
    # The workload exercised every way an order changes the book.
    assert {
        "Order.Rested",
        "Order.PartiallyFilled",
        "Order.Filled",
        "Order.Cancelled",
        "Order.Expired",
        "Order.Amended",
    } <= kinds
    assert any(store.levels[key] for key in store.levels)


def test_one_event_per_batch_gives_the_same_books() -> None:
    """Splits between an amend and the fills and rest that follow it are fine too."""
    exchange, events = recorded_run()
    store = Store()
    for event in events:
        store.apply([event])
    assert_books_equal(store, exchange.venues)
    assert_orders_equal(store, exchange.venues)


@settings(max_examples=25, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=60_000), max_size=200))
def test_any_batching_gives_the_same_books(cuts: list[int]) -> None:
    exchange, events = recorded_run()
    bounds = sorted({0, len(events), *(cut % (len(events) + 1) for cut in cuts)})
    store = Store()
    diffs: list[dict[tuple[str, str], dict[str, Decimal]]] = []
    for start, end in itertools.pairwise(bounds):
        diffs.append(store.apply(events[start:end]))
    assert_books_equal(store, exchange.venues)
    assert_orders_equal(store, exchange.venues)
    # The changed levels of each batch, applied in order, rebuild the books too.
    rebuilt: dict[tuple[str, str], dict[str, Decimal]] = {}
    for diff in diffs:
        for key, changed in diff.items():
            levels = rebuilt.setdefault(key, {})
            for price, total in changed.items():
                if total:
                    levels[price] = total
                else:
                    levels.pop(price)
    assert {k: v for k, v in rebuilt.items() if v} == {k: v for k, v in store.levels.items() if v}


def test_a_taker_fill_leaves_the_book_alone_and_a_maker_fill_reduces_it() -> None:
    exchange = Exchange(MARKETS, T0)
    exchange.collect_events()
    store = Store()
    maker = exchange.open_account("maker", T0).id
    taker = exchange.open_account("taker", T0).id
    for account in (maker, taker):
        exchange.deposit(account, "BTC", Decimal(10), f"{account}-btc", T0)
        exchange.deposit(account, "USDT", Decimal(10**6), f"{account}-usdt", T0)
    store.apply(exchange.collect_events())

    def place(account: UUID, command: str, side: Side, price: str, quantity: str) -> None:
        exchange.place(
            account,
            command,
            T0,
            symbol="BTC-USDT",
            side=side,
            type=OrderType.LIMIT,
            price=Decimal(price),
            quantity=Decimal(quantity),
        )

    place(maker, "m1", Side.SELL, "50000", "0.5")
    place(maker, "m2", Side.SELL, "50000", "0.25")
    store.apply(exchange.collect_events())
    assert store.levels["BTC-USDT", ASKS] == {"50000.00": Decimal("0.75")}
    # A buy for more than the level: it takes both makers, then rests the rest.
    place(taker, "t1", Side.BUY, "50000", "1")
    changed = store.apply(exchange.collect_events())
    assert changed == {
        ("BTC-USDT", ASKS): {"50000.00": Decimal(0)},
        ("BTC-USDT", BIDS): {"50000.00": Decimal("0.25")},
    }
    assert store.levels["BTC-USDT", ASKS] == {}
    assert_books_equal(store, exchange.venues)
    assert_orders_equal(store, exchange.venues)


def test_level_arithmetic_is_exact_and_drops_empty_levels() -> None:
    levels = {"10.00": Decimal("0.30000000")}
    changed = apply_deltas(levels, {"10.00": Decimal("-0.1"), "9.00": Decimal("0.2")})
    assert changed == {"10.00": Decimal("0.2"), "9.00": Decimal("0.2")}
    assert apply_deltas(levels, {"10.00": Decimal("-0.2"), "9.00": Decimal(0)}) == {
        "10.00": Decimal(0)
    }
    assert levels == {"9.00": Decimal("0.2")}
    with pytest.raises(BookInconsistent):
        apply_deltas(levels, {"9.00": Decimal("-0.3")})


def test_levels_are_ordered_as_numbers_best_first() -> None:
    levels = {p: Decimal(1) for p in ("9.50", "10.00", "100.00", "9.00")}
    assert best_prices(levels, BIDS, 10) == ["100.00", "10.00", "9.50", "9.00"]
    assert best_prices(levels, ASKS, 2) == ["9.00", "9.50"]


def test_formats_use_the_market_scales() -> None:
    btc, eth_btc = FORMATS["BTC-USDT"], FORMATS["ETH-BTC"]
    assert btc.price(Decimal("50000.000000")) == "50000.00"
    assert btc.quantity(Decimal("0.5")) == "0.50000000"
    assert btc.quote(Decimal("25000.0000000000")) == "25000.000000"
    assert eth_btc.price(Decimal("0.06000000")) == "0.06000"
    with pytest.raises(ArithmeticError):  # never rounded silently
        btc.price(Decimal("1.001"))


def test_an_order_never_accepted_cannot_rest() -> None:
    _, events = recorded_run()
    rested = next(e for e in events if type(e).__qualname__ == "Order.Rested")
    with pytest.raises(BookInconsistent):
        BookChanges(FORMATS, {}).apply(rested.originator_id, rested)


# -- the ticker ------------------------------------------------------------------

FMT = FORMATS["BTC-USDT"]
START = datetime(2026, 3, 1, tzinfo=UTC)

trades_strategy = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=3 * 24 * 3600 * 1000),  # ms after START
        st.integers(min_value=1, max_value=10**7),  # price in ticks
        st.integers(min_value=1, max_value=10**6),  # quantity in lots
    ),
    min_size=1,
    max_size=60,
)


def make_trades(raw: list[tuple[int, int, int]]) -> list[Trade]:
    market = MARKETS["BTC-USDT"]
    return [
        Trade(
            sequence=n + 2,
            trade_id=f"BTC-USDT:{n + 1}",
            price=market.ticks_to_price(ticks),
            quantity=market.lots_to_quantity(lots),
            taker_side="buy",
            at=START + timedelta(milliseconds=ms),
        )
        for n, (ms, ticks, lots) in enumerate(raw)
    ]


def direct_stats(trades: list[Trade]) -> dict[str, object]:
    """The 24h ticker computed straight from the trades."""
    end = max(t.at for t in trades)
    oldest = minute_of(end) - 24 * 3600 + 60
    window = [t for t in trades if minute_of(t.at) >= oldest]
    first = min(window, key=lambda t: t.sequence)
    last = max(window, key=lambda t: t.sequence)
    return {
        "open": FMT.price(first.price),
        "high": FMT.price(max(t.price for t in window)),
        "low": FMT.price(min(t.price for t in window)),
        "last": FMT.price(last.price),
        "volume": FMT.quantity(sum((t.quantity for t in window), Decimal(0))),
        "quote_volume": FMT.quote(sum((t.price * t.quantity for t in window), Decimal(0))),
        "trades": len(window),
        "at": end.isoformat(),
    }


@settings(max_examples=60, deadline=None)
@given(raw=trades_strategy, cuts=st.lists(st.integers(min_value=0, max_value=60), max_size=6))
def test_the_ticker_equals_the_trades_of_the_last_24h_however_batched(
    raw: list[tuple[int, int, int]], cuts: list[int]
) -> None:
    trades = make_trades(raw)
    stored: dict[int, bytes] = {}  # the minutes hash, as Redis keeps it
    bounds = sorted({0, len(trades), *(min(cut, len(trades)) for cut in cuts)})
    for start, end in itertools.pairwise(bounds):
        window = TickerWindow({k: Minute.from_json(v) for k, v in stored.items()})
        for trade in trades[start:end]:
            window.add(trade)
        window.expire()
        for key in window.expired:
            stored.pop(key, None)
        for key in window.touched:
            stored[key] = window.minutes[key].to_json(FMT)
        assert window.stats(FMT) == direct_stats(trades[:end])
    end_minute = minute_of(max(t.at for t in trades))
    assert all(end_minute - 24 * 3600 < key <= end_minute for key in stored)


def test_the_ticker_window_slides_with_the_latest_trade_time() -> None:
    day = timedelta(hours=24)
    trades = make_trades([(0, 100, 1), (60_000, 300, 2)])
    window = TickerWindow()
    for trade in trades:
        window.add(trade)
    window.expire()
    assert window.stats(FMT)["trades"] == 2
    late = Trade(9, "BTC-USDT:8", Decimal("2.00"), Decimal("0.0001"), "sell", START + day)
    window.add(late)
    window.expire()
    stats = window.stats(FMT)
    # The first minute left the window; the second (24h minus one minute ago) stayed.
    assert window.expired == {minute_of(START)}
    assert (stats["open"], stats["last"], stats["high"], stats["low"]) == (
        "3.00",
        "2.00",
        "3.00",
        "2.00",
    )
    assert (stats["volume"], stats["trades"]) == ("0.00030000", 2)
    assert stats["at"] == (START + day).isoformat()
    assert TickerWindow().stats(FMT) == {
        "open": None,
        "high": None,
        "low": None,
        "last": None,
        "volume": "0.00000000",
        "quote_volume": "0.000000",
        "trades": 0,
        "at": None,
    }
