"""The engine alone: price-time priority and every order type, on integers."""

from __future__ import annotations

import pytest

from domain.errors import InvalidOrder, UnknownOrder
from domain.matching import (
    REASON_FOK,
    REASON_FUNDS,
    REASON_IOC,
    REASON_MARKET,
    REASON_POST_ONLY,
    REASON_STP_TAKER,
    OrderBook,
    Outcome,
    SelfTradePrevention,
    Side,
    TimeInForce,
)

BUY, SELL = Side.BUY, Side.SELL


def book_with_asks(*asks: tuple[str, str, int, int]) -> OrderBook:
    """Asks given as (order id, account, price, lots), placed in that order."""
    book = OrderBook()
    for order_id, account, price, lots in asks:
        assert book.place(order_id, account, SELL, price, lots).outcome is Outcome.RESTING
    return book


def fills(execution: object) -> list[tuple[object, int, int]]:
    return [(f.maker_id, f.price, f.lots) for f in execution.fills]  # type: ignore[attr-defined]


def test_price_then_time_priority_and_maker_price() -> None:
    book = book_with_asks(("a1", "x", 101, 5), ("a2", "y", 100, 5), ("a3", "z", 100, 5))
    execution = book.place("b", "t", BUY, 102, 12)
    assert fills(execution) == [("a2", 100, 5), ("a3", 100, 5), ("a1", 101, 2)]
    assert execution.outcome is Outcome.FILLED
    assert execution.notional == 100 * 10 + 101 * 2
    assert book.depth(SELL) == [(101, 3)]


def test_limit_rests_the_remainder_and_book_never_crosses() -> None:
    book = book_with_asks(("a", "x", 100, 5))
    execution = book.place("b", "t", BUY, 100, 8)
    assert execution.outcome is Outcome.RESTING
    assert execution.remaining_lots == 3
    assert book.best_bid() == 100
    assert book.best_ask() is None


def test_exact_fill_empties_the_level() -> None:
    book = book_with_asks(("a", "x", 100, 5))
    assert book.place("b", "t", BUY, 100, 5).outcome is Outcome.FILLED
    assert book.depth(SELL) == []
    assert book.orders == {}


def test_ioc_expires_its_remainder_without_resting() -> None:
    book = book_with_asks(("a", "x", 100, 5))
    execution = book.place("b", "t", BUY, 100, 8, tif=TimeInForce.IOC)
    assert (execution.outcome, execution.reason, execution.filled_lots) == (
        Outcome.EXPIRED,
        REASON_IOC,
        5,
    )
    assert book.best_bid() is None


def test_fok_fills_completely_or_not_at_all() -> None:
    book = book_with_asks(("a", "x", 100, 5), ("b", "y", 101, 5))
    killed = book.place("k", "t", BUY, 101, 11, tif=TimeInForce.FOK)
    assert (killed.outcome, killed.reason, killed.fills) == (Outcome.EXPIRED, REASON_FOK, [])
    assert book.depth(SELL) == [(100, 5), (101, 5)]
    filled = book.place("f", "t", BUY, 101, 10, tif=TimeInForce.FOK)
    assert filled.outcome is Outcome.FILLED
    assert filled.filled_lots == 10


def test_fok_does_not_count_liquidity_beyond_its_price() -> None:
    book = book_with_asks(("a", "x", 100, 5), ("b", "y", 102, 5))
    assert book.place("k", "t", BUY, 101, 6, tif=TimeInForce.FOK).outcome is Outcome.EXPIRED
    assert book.depth(SELL) == [(100, 5), (102, 5)]


def test_fok_blocked_by_own_order_under_cancel_taker_has_no_effect() -> None:
    book = book_with_asks(("own", "t", 100, 5), ("other", "x", 101, 10))
    execution = book.place("k", "t", BUY, 101, 5, tif=TimeInForce.FOK)
    assert execution.outcome is Outcome.EXPIRED
    assert execution.cancelled_makers == []
    assert book.depth(SELL) == [(100, 5), (101, 10)]


def test_post_only_is_rejected_when_it_would_take() -> None:
    book = book_with_asks(("a", "x", 100, 5))
    execution = book.place("p", "t", BUY, 100, 1, post_only=True)
    assert (execution.outcome, execution.reason) == (Outcome.REJECTED, REASON_POST_ONLY)
    assert book.best_bid() is None
    assert book.place("q", "t", BUY, 99, 1, post_only=True).outcome is Outcome.RESTING


def test_market_order_by_quantity_sweeps_levels_and_expires_the_rest() -> None:
    book = book_with_asks(("a", "x", 100, 5), ("b", "y", 105, 5))
    execution = book.place("m", "t", BUY, None, 12)
    assert fills(execution) == [("a", 100, 5), ("b", 105, 5)]
    assert (execution.outcome, execution.reason) == (Outcome.EXPIRED, REASON_MARKET)
    assert book.orders == {}


def test_market_buy_by_quote_budget_stops_before_overspending() -> None:
    book = book_with_asks(("a", "x", 100, 5), ("b", "y", 110, 5))
    execution = book.place("m", "t", BUY, None, None, quote_limit=745)
    # 5 lots at 100 (500), then 2 lots at 110 (220); 25 left cannot buy another lot.
    assert fills(execution) == [("a", 100, 5), ("b", 110, 2)]
    assert execution.notional == 720
    assert execution.outcome is Outcome.FILLED


def test_market_buy_by_quote_with_too_small_a_budget_expires() -> None:
    book = book_with_asks(("a", "x", 100, 5))
    execution = book.place("m", "t", BUY, None, None, quote_limit=99)
    assert (execution.outcome, execution.reason, execution.fills) == (
        Outcome.EXPIRED,
        REASON_FUNDS,
        [],
    )


def test_market_buy_by_quantity_is_capped_by_its_funds() -> None:
    book = book_with_asks(("a", "x", 100, 5), ("b", "y", 110, 5))
    execution = book.place("m", "t", BUY, None, 10, quote_limit=800)
    assert fills(execution) == [("a", 100, 5), ("b", 110, 2)]
    assert (execution.outcome, execution.reason) == (Outcome.EXPIRED, REASON_FUNDS)


def test_market_order_into_an_empty_book_expires() -> None:
    execution = OrderBook().place("m", "t", SELL, None, 3)
    assert (execution.outcome, execution.reason, execution.filled_lots) == (
        Outcome.EXPIRED,
        REASON_MARKET,
        0,
    )


def test_self_trade_cancel_taker_keeps_the_maker() -> None:
    book = book_with_asks(("other", "x", 100, 2), ("own", "t", 100, 5))
    execution = book.place("b", "t", BUY, 100, 6, stp=SelfTradePrevention.CANCEL_TAKER)
    assert fills(execution) == [("other", 100, 2)]
    assert (execution.outcome, execution.reason) == (Outcome.CANCELLED, REASON_STP_TAKER)
    assert list(book.orders) == ["own"]
    assert book.best_bid() is None


def test_self_trade_cancel_maker_removes_it_and_keeps_matching() -> None:
    book = book_with_asks(("own", "t", 100, 5), ("other", "x", 101, 5))
    execution = book.place("b", "t", BUY, 101, 3, stp=SelfTradePrevention.CANCEL_MAKER)
    assert [m.order_id for m in execution.cancelled_makers] == ["own"]
    assert fills(execution) == [("other", 101, 3)]
    assert execution.outcome is Outcome.FILLED
    assert book.depth(SELL) == [(101, 2)]


def test_self_trade_cancel_both() -> None:
    book = book_with_asks(("own", "t", 100, 5), ("other", "x", 101, 5))
    execution = book.place("b", "t", BUY, 101, 3, stp=SelfTradePrevention.CANCEL_BOTH)
    assert [m.order_id for m in execution.cancelled_makers] == ["own"]
    assert (execution.outcome, execution.fills) == (Outcome.CANCELLED, [])
    assert book.depth(SELL) == [(101, 5)]
    assert book.best_bid() is None


def test_cancel_and_cancel_all() -> None:
    book = book_with_asks(("a", "x", 100, 5), ("b", "y", 101, 5), ("c", "x", 102, 5))
    assert book.cancel("b").remaining == 5
    with pytest.raises(UnknownOrder):
        book.cancel("b")
    assert [o.order_id for o in book.cancel_all("x")] == ["a", "c"]
    assert book.orders == {}
    assert book.depth(SELL) == []


def test_amend_down_keeps_priority_and_up_loses_it() -> None:
    book = book_with_asks(("a", "x", 100, 5), ("b", "y", 100, 5))
    assert book.amend("a", None, 3) is None
    assert [o.order_id for o in book.iter_orders(SELL)] == ["a", "b"]
    assert book.depth(SELL) == [(100, 8)]
    execution = book.amend("a", None, 4)
    assert execution is not None
    assert execution.outcome is Outcome.RESTING
    assert [o.order_id for o in book.iter_orders(SELL)] == ["b", "a"]


def test_amend_to_a_new_price_loses_priority_and_may_trade() -> None:
    book = OrderBook()
    book.place("bid", "x", BUY, 99, 5)
    book.place("a", "y", SELL, 101, 5)
    book.place("b", "z", SELL, 102, 5)
    moved = book.amend("b", 101, 5)
    assert moved is not None
    assert [o.order_id for o in book.iter_orders(SELL)] == ["a", "b"]
    crossing = book.amend("b", 99, 5)
    assert crossing is not None
    assert fills(crossing) == [("bid", 99, 5)]
    assert crossing.outcome is Outcome.FILLED
    assert "b" not in book.orders


def test_post_only_amend_that_would_take_is_refused_and_changes_nothing() -> None:
    book = OrderBook()
    book.place("ask", "x", SELL, 101, 5)
    book.place("p", "y", BUY, 99, 5, post_only=True)
    with pytest.raises(InvalidOrder):
        book.amend("p", 101, 5)
    assert book.depth(BUY) == [(99, 5)]
    assert book.depth(SELL) == [(101, 5)]


@pytest.mark.parametrize(
    ("price", "lots", "quote_limit"),
    [(0, 1, None), (-1, 1, None), (100, 0, None), (100, -3, None), (None, None, None)],
)
def test_engine_refuses_impossible_orders(
    price: int | None, lots: int | None, quote_limit: int | None
) -> None:
    book = OrderBook()
    with pytest.raises(InvalidOrder):
        book.place("x", "t", BUY, price, lots, quote_limit)
    assert book.orders == {}


def test_duplicate_order_id_is_refused() -> None:
    book = book_with_asks(("a", "x", 100, 5))
    with pytest.raises(InvalidOrder):
        book.place("a", "x", SELL, 100, 1)
    assert book.depth(SELL) == [(100, 5)]
