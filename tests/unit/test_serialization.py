"""Events to bytes and back: exact types, stable bytes, and upcasting of old versions."""

from __future__ import annotations

from decimal import Decimal
from typing import Any
from uuid import UUID, uuid5

import orjson
from eventsourcing.persistence import StoredEvent

from domain.aggregates import BITEX_NAMESPACE, ExchangeAggregate, StampedCreated
from domain.matching import Side
from domain.orders import OrderType
from infra.serialization import EventMapper, ParsedValues
from tests.unit.conftest import T0, World


def a_busy_world() -> World:
    world = World()
    ann = world.funded("ann", BTC="1", USDT="100000")
    bob = world.funded("bob", BTC="1", USDT="100000")
    ex = world.exchange
    ex.place(
        ann, "1", world.clock.tick(), symbol="BTC-USDT", side=Side.SELL,
        type=OrderType.LIMIT, price=Decimal("100"), quantity=Decimal("0.5"),
    )  # fmt: skip
    order = ex.place(
        bob, "2", world.clock.tick(), symbol="BTC-USDT", side=Side.BUY,
        type=OrderType.LIMIT, price=Decimal("101"), quantity=Decimal("0.7"),
    )  # fmt: skip
    ex.amend(bob, order.id, world.clock.tick(), price=Decimal("99"), quantity=Decimal("0.1"))
    ex.cancel(bob, order.id, world.clock.tick())
    world.drain()
    return world


def test_every_event_survives_the_round_trip_with_its_types_and_bytes() -> None:
    mapper = EventMapper()
    world = a_busy_world()
    kinds = set()
    for event in world.events:
        stored = mapper.to_stored_event(event)
        back = mapper.to_domain_event(stored)
        assert back == event
        assert mapper.to_stored_event(back).state == stored.state
        kinds.add(stored.topic)
    assert {"bitex.account.TradeSettled", "bitex.order.Amended", "bitex.market.Listed"} <= kinds


def test_a_decimal_keeps_its_scale_and_the_json_is_plain() -> None:
    mapper = EventMapper()
    world = a_busy_world()
    settled = next(
        e
        for e in world.events
        if type(e).__name__ == "TradeSettled" and e.received_asset == "BTC"  # type: ignore[attr-defined]
    )
    stored = mapper.to_stored_event(settled)
    raw = orjson.loads(stored.state)
    assert raw["fee_rounding"] == "0.00000000"
    assert raw["price"] == "100.000000"
    assert raw["order_id"] == str(settled.order_id)  # type: ignore[attr-defined]
    back = mapper.to_domain_event(stored)
    assert str(back.fee_rounding) == "0E-8"  # type: ignore[attr-defined]
    assert back.price.as_tuple().exponent == -6  # type: ignore[attr-defined]
    assert isinstance(back.order_id, UUID)  # type: ignore[attr-defined]


def test_an_id_from_a_header_is_the_object_the_events_fields_hold() -> None:
    mapper = EventMapper()
    settled = next(e for e in a_busy_world().events if type(e).__name__ == "TradeSettled")
    back = mapper.to_domain_event(mapper.to_stored_event(settled))
    order_id = back.order_id  # type: ignore[attr-defined]
    assert mapper.parsed_id(str(order_id)) is order_id
    other = uuid5(BITEX_NAMESPACE, "never in an event")
    assert mapper.parsed_id(str(other)) == other
    assert mapper.parsed_id(str(other)) is mapper.parsed_id(str(other))


def test_parsed_values_parse_each_string_once_and_keep_at_most_their_limit() -> None:
    amounts = ParsedValues(Decimal, limit=2)
    first = amounts["1.50"]
    assert first == Decimal("1.50")
    assert str(first) == "1.50"
    assert amounts["1.50"] is first
    typed = Decimal("2")
    assert amounts[typed] is typed  # not a string: given back, not kept
    assert amounts[7] == 7
    assert len(amounts) == 1
    amounts["2.0"]
    amounts["3.0"]  # the limit reached: it starts again
    assert list(amounts) == ["3.0"]
    assert amounts["1.50"] == first


def test_keys_are_sorted_so_equal_events_are_equal_bytes() -> None:
    mapper = EventMapper()
    event = a_busy_world().events[-1]
    state = mapper.to_stored_event(event).state
    keys = list(orjson.loads(state))
    assert keys == sorted(keys)


class Wallet(ExchangeAggregate):
    """A test-only aggregate whose event gained a field in version 2."""

    TOPIC = "test.wallet"

    class Opened(ExchangeAggregate.Event, StampedCreated):
        TOPIC = "test.wallet.Opened"
        owner: str
        currency: str
        class_version = 2

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["currency"] = "USDT"

    def __init__(self, owner: str, currency: str) -> None:
        self.owner = owner
        self.currency = currency


def test_a_version_one_event_is_upcast_when_read() -> None:
    mapper = EventMapper()
    wallet_id = uuid5(BITEX_NAMESPACE, "wallet")
    old_state = {"originator_topic": "test.wallet", "owner": "ann", "timestamp": T0.isoformat()}
    stored = StoredEvent(wallet_id, 1, "test.wallet.Opened", orjson.dumps(old_state))
    event = mapper.to_domain_event(stored)
    wallet = event.mutate(None)
    assert isinstance(wallet, Wallet)
    assert (wallet.owner, wallet.currency, wallet.created_on) == ("ann", "USDT", T0)
    rewritten = orjson.loads(mapper.to_stored_event(event).state)
    assert rewritten["class_version"] == 2
    assert rewritten["currency"] == "USDT"
