"""Markets outside the write side: listing them by command, and reading the listed ones.

A market exists once the log lists it (``TradeTape.Listed``). Listing one is a
command like any other (``LIST_MARKET``): ``list_markets`` sends it the way the
gateway does, for ``bitex run`` and the test harnesses. The gateways know the
markets from the MySQL read model (``MarketCatalog``), cached, and read again
when a request names one they do not know, so a market listed a moment ago is
usable without a restart.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from sqlalchemy import insert, select
from sqlalchemy.engine import Engine

from domain.aggregates import account_id_for
from domain.markets import MARKET_FIELDS, Market, market_fields, market_from_fields
from infra import messages
from infra.command_client import CommandClient
from infra.messages import Command
from infra.read_models import markets as market_table

LISTING_DESK = account_id_for("market-listings")
"""The account a listing is sent from when no operator sends it (``bitex run``, tests):
a listing changes no account; the account only routes the command."""

LISTED_AT, SECOND = datetime(2026, 1, 1), timedelta(seconds=1)
"""When ``seed_catalog`` says its markets were listed: in their order, a second apart."""

MISS_RELOAD_EVERY = 0.05
"""Seconds between two reads of the catalog caused by unknown symbols (a flood of
made-up symbols costs at most 20 small queries a second)."""


def listing_command(market: Market, account_id: UUID = LISTING_DESK) -> Command:
    return CommandClient.stamp(messages.LIST_MARKET, account_id, dict(market_fields(market)))


async def list_markets(client: CommandClient, markets: Iterable[Market], timeout: float) -> None:
    """List ``markets``, one after the other (so in this order), through the write side;
    raises if one is refused (listing a market again is not a refusal) or not answered."""
    for market in markets:
        symbol = market.symbol
        outcome = await client.execute(listing_command(market), timeout)
        if outcome is None:
            msg = f"listing {symbol}: no answer within {timeout} s (are the processors running?)"
            raise TimeoutError(msg)
        if not outcome.ok:
            msg = f"listing {symbol} was refused: {outcome.message} ({outcome.code})"
            raise RuntimeError(msg)


def market_json(market: Market) -> dict[str, Any]:
    """A market as the API shows it (``GET /v1/markets``, a listing's answer)."""
    return {
        "symbol": market.symbol,
        "base": market.base.code,
        "quote": market.quote.code,
        "price_scale": market.price_scale,
        "base_scale": market.base.scale,
        "quote_scale": market.quote.scale,
        "tick_size": format(market.tick_size, "f"),
        "lot_size": format(market.lot_size, "f"),
        "min_quantity": format(market.min_quantity, "f"),
        "max_quantity": format(market.max_quantity, "f"),
        "min_notional": format(market.min_notional, "f"),
        "maker_fee": format(market.maker_fee.rate, "f"),
        "taker_fee": format(market.taker_fee.rate, "f"),
    }


def seed_catalog(engine: Engine, markets: Iterable[Market]) -> None:
    """The ``markets`` rows the MySQL projection writes for these markets' listings, written
    directly: for a gateway run without the write side (read-side tests, a benchmark
    of the gateway alone). Anything else lists markets by command."""
    rows = [
        {"symbol": market.symbol, **market_fields(market), "listed_at": LISTED_AT + index * SECOND}
        for index, market in enumerate(markets)
    ]
    with engine.begin() as connection:
        connection.execute(insert(market_table), rows)


def load_markets(engine: Engine) -> dict[str, Market]:
    """Every market the MySQL read model lists, in the order they were listed."""
    with engine.connect() as connection:
        rows = connection.execute(
            select(market_table).order_by(market_table.c.listed_at, market_table.c.symbol)
        )
        return {
            row.symbol: market_from_fields({name: getattr(row, name) for name in MARKET_FIELDS})
            for row in rows
        }


class MarketCatalog:
    """The listed markets, as the read model has them (see the module docstring).

    ``markets`` is one dict, updated in place, so what holds it sees new markets.
    Markets given at construction are known before any read (tests).
    """

    def __init__(self, markets: Mapping[str, Market] | None = None) -> None:
        self.markets: dict[str, Market] = dict(markets or {})
        self._engine: Engine | None = None
        self._lock = asyncio.Lock()
        self._loaded_at = -float("inf")
        self._listeners: list[Callable[[Market], None]] = []

    def on_new(self, listener: Callable[[Market], None]) -> None:
        """Call ``listener`` with each market learned from now on."""
        self._listeners.append(listener)

    async def start(self, engine: Engine) -> None:
        self._engine = engine
        await self.reload()

    async def reload(self) -> None:
        if self._engine is None:
            return
        async with self._lock:
            found = await asyncio.to_thread(load_markets, self._engine)
            self._loaded_at = time.monotonic()
            for market in found.values():
                self.learn(market)

    def learn(self, market: Market) -> None:
        """Know ``market`` (listed: from the read model, or from its listing's outcome)."""
        if market.symbol not in self.markets:
            self.markets[market.symbol] = market
            for listener in self._listeners:
                listener(market)

    async def refresh(self) -> None:
        """Read the catalog again, unless it was read a moment ago (an unknown name)."""
        if time.monotonic() - self._loaded_at >= MISS_RELOAD_EVERY:
            await self.reload()

    async def find(self, symbol: str) -> Market | None:
        """The market, reading the catalog again if it is unknown."""
        market = self.markets.get(symbol)
        if market is None:
            await self.refresh()
            market = self.markets.get(symbol)
        return market
