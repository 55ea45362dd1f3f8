"""The markets the log lists: every ``TradeTape.Listed`` on the market-events topic.

No role configures markets: an operator lists them, and the listing is an event
(``bitex.market.Listed``, with every rule of its market). The projections, the
audit and statements read the listings from the log before they start, and the
projections take each later one as it comes (see ``MarketListings``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from typing import cast

from domain.markets import Market
from domain.orders import Order
from domain.venue import TradeTape
from infra.event_records import EVENT_TOPIC, Headers, header, stored_event
from infra.serialization import EventMapper
from infra.settings import Settings
from infra.topics import TopicMap
from projections.audit_read import EventReader, partition_ends
from projections.base import EventRecord

LISTED = TradeTape.Listed.TOPIC.encode()


def listed_market(event: TradeTape.Listed) -> Market:
    """The market a listing lists (through the tape it creates, so the same checks)."""
    tape = cast(TradeTape, event.mutate(None))
    return tape.market


def take_listings(
    markets: dict[str, Market], records: Iterable[tuple[bytes, Headers]], mapper: EventMapper
) -> None:
    """Add the market of every listing among ``records`` (other records are skipped
    unread). A symbol listed twice keeps its first listing, as the processors do."""
    for value, headers in records:
        if header(headers, EVENT_TOPIC) != LISTED:
            continue
        stored = stored_event(value, headers)
        assert stored is not None
        event = mapper.to_domain_event(stored)
        assert isinstance(event, TradeTape.Listed)
        markets.setdefault(event.symbol, listed_market(event))


async def read_listings(settings: Settings, topics: TopicMap) -> dict[str, Market]:
    """Every market listed on the log as of now (market-events, each partition in full)."""
    markets: dict[str, Market] = {}
    mapper = EventMapper()
    ends = await partition_ends(settings, [topics.market_events])
    async with EventReader(settings) as reader:
        for (topic, partition), end in sorted(ends.items()):
            async for fetched in reader.batches(topic, partition, 0, end):
                take_listings(markets, ((value, headers) for _, value, headers in fetched), mapper)
    return markets


class MarketListings:
    """Where a projection looks markets up: those read from the log at start, and the
    log again when a batch names a market it does not know (its listing may sit on
    the market-events topic, behind the order events a consumer took first)."""

    def __init__(self, settings: Settings, topics: TopicMap) -> None:
        self.settings = settings
        self.topics = topics
        self._lock = asyncio.Lock()
        self._markets: dict[str, Market] = {}
        self._reads = 0

    async def markets(self, reads_before: int = -1) -> dict[str, Market]:
        """The markets listed so far; read again unless a read happened after the
        caller's ``reads_before`` (one read serves every projection that waited)."""
        async with self._lock:
            if self._reads <= reads_before or self._reads == 0:
                self._markets = await read_listings(self.settings, self.topics)
                self._reads += 1
            return dict(self._markets)

    @property
    def reads(self) -> int:
        return self._reads


def named_symbols(records: Iterable[EventRecord]) -> set[str]:
    """The markets events name: orders' (when created) and trades' (by trade id)."""
    names = set()
    for record in records:
        event = record.event
        if isinstance(event, (Order.Accepted, Order.Rejected)):
            names.add(event.symbol)
        elif isinstance(event, TradeTape.TradeExecuted):
            names.add(event.trade_id.rpartition(":")[0])
    return names


async def markets_needed(
    known: Mapping[str, Market],
    fresh: Sequence[EventRecord],
    listings: MarketListings | None,
    reads_seen: int,
) -> tuple[list[Market], int]:
    """The markets a batch needs that ``known`` lacks: listed in the batch itself, or
    else read from the log; and the listings' reads seen since."""
    found: dict[str, Market] = {}
    for record in fresh:
        event = record.event
        if isinstance(event, TradeTape.Listed) and event.symbol not in known:
            found.setdefault(event.symbol, listed_market(event))
    missing = named_symbols(fresh) - set(known) - set(found)
    if missing and listings is not None:
        for symbol, market in (await listings.markets(reads_seen)).items():
            if symbol not in known:
                found.setdefault(symbol, market)
        reads_seen = listings.reads
    return list(found.values()), reads_seen
