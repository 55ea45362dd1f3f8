"""Shared helpers for the pure domain tests: no services, no clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from uuid import UUID

import pytest

from domain.exchange import Exchange
from domain.ledger import Ledger
from domain.markets import Market, demo_markets
from domain.venue import Event

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class Clock:
    """A test's stamped time: every command gets the next second."""

    def __init__(self) -> None:
        self.now = T0

    def tick(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


class World:
    """An in-process exchange plus the ledger of everything it emitted."""

    def __init__(self, markets: dict[str, Market] | None = None) -> None:
        self.clock = Clock()
        self.exchange = Exchange(markets or demo_markets(), T0)
        self.ledger = Ledger()
        self.events: list[Event] = []
        self.drain()

    def drain(self) -> list[Event]:
        new = self.exchange.collect_events()
        for event in new:
            self.ledger.apply(event)
        self.events.extend(new)
        return new

    def funded(self, owner: str, **amounts: str) -> UUID:
        account = self.exchange.open_account(owner, self.clock.tick())
        for asset, amount in amounts.items():
            self.exchange.deposit(
                account.id, asset, Decimal(amount), f"{owner}-{asset}", self.clock.tick()
            )
        self.drain()
        return account.id


@pytest.fixture
def world() -> World:
    return World()
