"""A snapshot restores a core's state exactly, book priority and order included."""

from __future__ import annotations

import orjson

from domain.exchange import Exchange
from domain.markets import demo_markets
from domain.state_hash import state_hash
from infra.serialization import EventMapper
from streams.snapshots import (
    account_from_json,
    account_to_json,
    venue_from_json,
    venue_to_json,
)
from tests.workload import T0, Workload, apply_to_exchange


def busy_exchange(commands: int) -> tuple[Exchange, Workload]:
    exchange = Exchange(demo_markets(), T0)
    workload = Workload(seed=5, owners=8)
    for command in workload.opening() + workload.trading(commands):
        apply_to_exchange(exchange, command)
    exchange.collect_events()
    return exchange, workload


def restored_copy(exchange: Exchange) -> Exchange:
    """The same exchange, rebuilt from JSON snapshots of its accounts and venues."""
    copy = Exchange(exchange.markets, T0)
    copy.collect_events()
    for account_id, account in exchange.accounts.items():
        copy.accounts[account_id] = account_from_json(
            orjson.loads(orjson.dumps(account_to_json(account)))
        )
    for symbol, venue in exchange.venues.items():
        data = orjson.loads(orjson.dumps(venue_to_json(venue)))
        copy.venues[symbol] = restored = venue_from_json(data)
        for order_id in restored.orders:
            copy._venue_of[order_id] = restored
    return copy


def test_a_restored_state_equals_the_original_and_goes_on_identically() -> None:
    exchange, workload = busy_exchange(800)
    copy = restored_copy(exchange)
    assert state_hash(copy.accounts.values(), copy.venues.values()) == state_hash(
        exchange.accounts.values(), exchange.venues.values()
    )
    for symbol, venue in exchange.venues.items():
        assert list(copy.venues[symbol].book.orders) == list(venue.book.orders)
    mapper = EventMapper()
    for command in workload.trading(400):
        apply_to_exchange(exchange, command)
        apply_to_exchange(copy, command)
        original = [mapper.to_stored_event(e) for e in exchange.collect_events()]
        again = [mapper.to_stored_event(e) for e in copy.collect_events()]
        assert again == original
