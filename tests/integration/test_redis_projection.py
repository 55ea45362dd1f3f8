"""The Redis market-data projection on a real Redis, fed the events of the real processor cores.

Each test works in a namespace of its own (``RedisKeys.for_prefix(unique(...))``)
and deletes its keys afterwards.
"""

from __future__ import annotations

import asyncio
import functools
import random
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace
from decimal import Decimal
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from eventsourcing.persistence import StoredEvent

from domain.markets import demo_markets
from domain.matching import Side
from domain.venue import TradeTape, Venue
from infra.dedupe import ForkedEvent
from infra.redis import create_redis
from infra.redis_keys import RedisKeys
from infra.settings import Settings
from projections.base import EventRecord
from projections.redis_projection import RedisProjection
from streams.local import LocalCluster
from tests.events import consumption_order, event_log
from tests.workload import Workload

pytestmark = pytest.mark.integration

MARKETS = demo_markets()
Batches = list[list[EventRecord]]
Dump = dict[str, Any]


@functools.cache
def recorded() -> tuple[LocalCluster, list[EventRecord]]:
    workload = Workload(seed=5, owners=20)
    return event_log(workload.opening() + workload.trading(2500))


def batches_of(records: Sequence[EventRecord], seed: int, largest: int = 400) -> Batches:
    stream = consumption_order(records, seed)
    rng = random.Random(seed)
    out: Batches = []
    while stream:
        size = rng.randint(1, largest)
        out.append(stream[:size])
        stream = stream[size:]
    return out


@pytest.fixture
async def namespaces(
    settings: Settings, unique: Callable[[str], str]
) -> AsyncIterator[Callable[[], RedisKeys]]:
    """Fresh key namespaces; every key under them is deleted after the test."""
    made: list[RedisKeys] = []

    def make() -> RedisKeys:
        made.append(RedisKeys.for_prefix(unique("redis")))
        return made[-1]

    yield make
    client = create_redis(settings)
    try:
        for keys in made:
            stale = [key async for key in client.scan_iter(match=f"{keys.namespace}*")]
            if stale:
                await client.delete(*stale)
    finally:
        await client.aclose()


@pytest.fixture
async def projections(settings: Settings) -> AsyncIterator[Callable[[RedisKeys], Any]]:
    """Started projections, each with a client of its own, closed after the test."""
    made: list[RedisProjection] = []

    async def make(keys: RedisKeys) -> RedisProjection:
        projection = RedisProjection(create_redis(settings), keys, MARKETS)
        await projection.start()
        made.append(projection)
        return projection

    yield make
    for projection in made:
        await projection.close()


async def apply_all(projection: RedisProjection, batches: Batches) -> None:
    for batch in batches:
        await projection.apply(batch)


async def dump(client: aioredis.Redis, keys: RedisKeys) -> Dump:
    """Every key of a namespace with its value (key names without the namespace)."""
    found: Dump = {}
    async for raw in client.scan_iter(match=f"{keys.namespace}*"):
        key = raw.decode()
        kind = (await client.type(key)).decode()
        name = key.removeprefix(keys.namespace)
        if kind == "string":
            found[name] = await client.get(key)
        elif kind == "hash":
            found[name] = await client.hgetall(key)
        elif kind == "list":
            found[name] = await client.lrange(key, 0, -1)
        else:
            raise AssertionError(f"unexpected {kind} key {key}")
    return found


def engine_levels(venue: Venue) -> dict[str, list[tuple[Decimal, Decimal]]]:
    market = venue.market
    return {
        name: [
            (market.ticks_to_price(ticks), market.lots_to_quantity(lots))
            for ticks, lots in venue.book.depth(side)
        ]
        for name, side in (("bids", Side.BUY), ("asks", Side.SELL))
    }


def as_decimals(levels: Sequence[Sequence[str]]) -> list[tuple[Decimal, Decimal]]:
    return [(Decimal(price), Decimal(quantity)) for price, quantity in levels]


def scaled(value: Decimal, quantum: Decimal) -> str:
    return format(value.quantize(quantum), "f")


def last_offsets(records: Sequence[EventRecord]) -> dict[bytes, bytes]:
    ends: dict[bytes, bytes] = {}
    for record in records:
        ends[f"{record.topic}:{record.partition}".encode()] = str(record.offset + 1).encode()
    return ends


async def test_books_equal_the_engine_books(
    redis_client: aioredis.Redis, namespaces: Any, projections: Any
) -> None:
    cluster, records = recorded()
    keys = namespaces()
    projection = await projections(keys)
    await apply_all(projection, batches_of(records, seed=1))

    venues = {venue.market.symbol: venue for venue in cluster.venues()}
    assert set(venues) == set(MARKETS)
    for symbol, venue in venues.items():
        market = venue.market
        expected = engine_levels(venue)
        assert expected["bids"], f"{symbol}: the workload must leave a book"
        assert expected["asks"], f"{symbol}: the workload must leave a book"
        snapshot = orjson.loads(await redis_client.get(keys.book_snapshot(symbol)))
        assert snapshot["symbol"] == symbol
        assert snapshot["sequence"] > 0
        for side in ("bids", "asks"):
            assert as_decimals(snapshot[side]) == expected[side]
            stored = await redis_client.hgetall(keys.book_side(symbol, side))
            assert {(Decimal(p.decode()), Decimal(q.decode())) for p, q in stored.items()} == set(
                expected[side]
            )
            # Written at the market's scales, so each price has exactly one field.
            for price, quantity in snapshot[side]:
                assert price == format(Decimal(price).quantize(market.tick_size), "f")
                assert quantity == format(Decimal(quantity).quantize(market.base.quantum), "f")

    # The orders kept are exactly the orders on the books.
    resting = {}
    async for raw in redis_client.scan_iter(match=f"{keys.namespace}resting:*"):
        fields = await redis_client.hgetall(raw)
        order_id = raw.decode().rpartition(":")[2]
        resting[order_id] = (
            fields[b"symbol"].decode(),
            fields[b"side"].decode(),
            Decimal(fields[b"price"].decode()),
            Decimal(fields[b"remaining"].decode()),
        )
    on_books = {
        str(order_id): (
            symbol,
            order.side.value,
            venue.market.ticks_to_price(order.price),
            venue.market.lots_to_quantity(order.remaining),
        )
        for symbol, venue in venues.items()
        for order_id, order in venue.book.orders.items()
    }
    assert resting == on_books

    assert await redis_client.hgetall(keys.offsets("redis")) == last_offsets(records)
    assert await projection.positions() == {(r.topic, r.partition): r.offset + 1 for r in records}


async def test_any_batching_and_a_restart_give_the_same_keys(
    redis_client: aioredis.Redis, namespaces: Any, projections: Any
) -> None:
    _, records = recorded()
    one_go, restarted = namespaces(), namespaces()
    await apply_all(await projections(one_go), [list(consumption_order(records, 9))])
    reference = await dump(redis_client, one_go)

    batches = batches_of(records, seed=2)
    half = len(batches) // 2
    await apply_all(await projections(restarted), batches[:half])
    # A restart resumes from the stored offsets; batches it has are skipped.
    await apply_all(await projections(restarted), batches)
    got = await dump(redis_client, restarted)
    # Only the book sequences (how many diffs were published) depend on the batching.
    for stored in (reference, got):
        for name in list(stored):
            if name.endswith(":snapshot"):
                snapshot = orjson.loads(stored.pop(name))
                assert snapshot.pop("sequence") > 0
                stored[name] = snapshot
    assert got == reference


async def test_applying_the_same_batches_again_changes_nothing_and_publishes_nothing(
    redis_client: aioredis.Redis, namespaces: Any, projections: Any
) -> None:
    _, records = recorded()
    keys = namespaces()
    batches = batches_of(records, seed=3)
    projection = await projections(keys)
    await apply_all(projection, batches)
    before = await dump(redis_client, keys)

    pubsub = redis_client.pubsub()
    await pubsub.psubscribe(keys.channel("*"))
    try:
        assert (await pubsub.get_message(timeout=5))["type"] == "psubscribe"  # type: ignore[index]
        await apply_all(projection, batches)  # the same instance
        await apply_all(await projections(keys), batches)  # after a restart
        assert await dump(redis_client, keys) == before
        assert await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5) is None
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]


async def test_duplicates_at_new_offsets_change_nothing_but_the_offsets(
    redis_client: aioredis.Redis, namespaces: Any, projections: Any
) -> None:
    """A restarted processor re-emits what it had written: same bytes, later offsets."""
    _, records = recorded()
    keys = namespaces()
    batches = batches_of(records, seed=4)
    warm = await projections(keys)
    await apply_all(warm, batches)
    before = await dump(redis_client, keys)

    ends = {(r.topic, r.partition): r.offset + 1 for r in records}
    copies: list[EventRecord] = []
    for (topic, partition), end in sorted(ends.items()):
        mine = [r for r in records if (r.topic, r.partition) == (topic, partition)]
        again = mine[len(mine) // 3 : len(mine) // 3 + 150]
        copies += [replace(r, offset=end + i) for i, r in enumerate(again)]
    assert any(isinstance(r.event, TradeTape.TradeExecuted) for r in copies)

    for projection in (warm, await projections(keys)):  # remembers the bytes / does not
        await projection.apply(copies[: len(copies) // 2])
        await projection.apply(copies)
        after = await dump(redis_client, keys)
        offsets = after.pop("offsets:redis")
        assert after == {k: v for k, v in before.items() if k != "offsets:redis"}
        assert offsets == {
            f"{topic}:{partition}".encode(): str(
                max(
                    [
                        end,
                        *(
                            r.offset + 1
                            for r in copies
                            if (r.topic, r.partition) == (topic, partition)
                        ),
                    ]
                )
            ).encode()
            for (topic, partition), end in ends.items()
        }

    # A copy with other bytes under a known identity is a fork: an alarm, and no write.
    trade = next(r for r in copies if isinstance(r.event, TradeTape.TradeExecuted))
    stored = trade.stored
    forged = StoredEvent(
        stored.originator_id,
        stored.originator_version,
        stored.topic,
        stored.state.replace(b'"quantity":"', b'"quantity":"1'),
    )
    position = (trade.topic, trade.partition)
    fork = replace(trade, offset=ends[position] + 10_000, stored=forged)
    settled = await dump(redis_client, keys)
    with pytest.raises(ForkedEvent):
        await warm.apply([fork])
    assert await dump(redis_client, keys) == settled


async def test_a_client_syncing_from_a_snapshot_and_diffs_holds_the_book(
    redis_client: aioredis.Redis, namespaces: Any, projections: Any
) -> None:
    _, records = recorded()
    keys = namespaces()
    batches = batches_of(records, seed=5, largest=120)
    projection = await projections(keys)
    pubsub = redis_client.pubsub()
    await pubsub.subscribe(*(keys.channel(f"book:{symbol}") for symbol in MARKETS))
    try:
        third = len(batches) // 3
        await apply_all(projection, batches[:third])
        snapshots = {
            symbol: orjson.loads(raw)
            if (raw := await redis_client.get(keys.book_snapshot(symbol)))
            else {"sequence": 0, "bids": [], "asks": []}
            for symbol in MARKETS
        }
        await apply_all(projection, batches[third:])
        final = {
            symbol: orjson.loads(await redis_client.get(keys.book_snapshot(symbol)))
            for symbol in MARKETS
        }

        diffs: dict[str, list[dict[str, Any]]] = {symbol: [] for symbol in MARKETS}
        expected = sum(snapshot["sequence"] for snapshot in final.values())
        deadline = time.monotonic() + 30
        while sum(map(len, diffs.values())) < expected and time.monotonic() < deadline:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
            if message is not None:
                diff = orjson.loads(message["data"])
                assert message["channel"].decode() == keys.channel(f"book:{diff['symbol']}")
                diffs[diff["symbol"]].append(diff)
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]

    for symbol in MARKETS:
        got = diffs[symbol]
        # One diff per sequence number, in order, no gap.
        assert [d["sequence"] for d in got] == list(range(1, final[symbol]["sequence"] + 1))
        assert all(d["type"] == "book" and (d["bids"] or d["asks"]) for d in got)
        book = {side: dict(snapshots[symbol][side]) for side in ("bids", "asks")}
        for diff in got:
            if diff["sequence"] <= snapshots[symbol]["sequence"]:
                continue
            for side in ("bids", "asks"):
                for price, quantity in diff[side]:
                    if quantity == "0":
                        del book[side][price]
                    else:
                        book[side][price] = quantity
        for side, best_first in (("bids", True), ("asks", False)):
            synced = sorted(
                book[side].items(), key=lambda level: Decimal(level[0]), reverse=best_first
            )
            assert [list(level) for level in synced] == final[symbol][side]


async def test_recent_trades_and_tickers_match_the_trades_in_the_log(
    redis_client: aioredis.Redis, namespaces: Any, projections: Any
) -> None:
    cluster, records = recorded()
    keys = namespaces()
    projection = await projections(keys)
    pubsub = redis_client.pubsub()
    await pubsub.psubscribe(keys.channel("trades:*"), keys.channel("ticker:*"))
    try:
        await apply_all(projection, batches_of(records, seed=6))
        published: list[dict[str, Any]] = []
        quiet = 0
        while quiet < 5:  # until nothing came for a second
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
            if message is None:
                quiet += 1
            else:
                quiet = 0
                published.append(orjson.loads(message["data"]))
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]

    venues = {venue.market.symbol: venue for venue in cluster.venues()}
    for symbol, market in MARKETS.items():
        tape = venues[symbol].tape
        trades = sorted(
            (
                r
                for r in records
                if isinstance(r.event, TradeTape.TradeExecuted) and r.aggregate_id == tape.id
            ),
            key=lambda r: r.version,
        )
        assert len(trades) > 50, f"{symbol}: the workload must trade"

        price = functools.partial(scaled, quantum=market.tick_size)
        quantity = functools.partial(scaled, quantum=market.base.quantum)

        expected = [
            {
                "trade_id": r.event.trade_id,
                "sequence": r.version,
                "price": price(r.event.price),
                "quantity": quantity(r.event.quantity),
                "taker_side": r.event.taker_side,
                "at": r.event.timestamp.isoformat(),
            }
            for r in reversed(trades)
        ][:1000]
        listed = [
            orjson.loads(raw)
            for raw in await redis_client.lrange(keys.recent_trades(symbol), 0, -1)
        ]
        assert listed == expected

        sent = [m for m in published if m["type"] == "trade" and m["symbol"] == symbol]
        assert [m["sequence"] for m in sent] == [r.version for r in trades]

        events = [r.event for r in trades]
        book = engine_levels(venues[symbol])
        ticker = orjson.loads(await redis_client.get(keys.ticker(symbol)))
        assert ticker == {
            "symbol": symbol,
            "open": price(events[0].price),
            "high": price(max(e.price for e in events)),
            "low": price(min(e.price for e in events)),
            "last": price(events[-1].price),
            "volume": quantity(sum((e.quantity for e in events), Decimal(0))),
            "quote_volume": format(
                sum((e.price * e.quantity for e in events), Decimal(0)).quantize(
                    market.quote.quantum
                ),
                "f",
            ),
            "trades": len(events),
            "best_bid": price(book["bids"][0][0]),
            "best_ask": price(book["asks"][0][0]),
            "at": max(e.timestamp for e in events).isoformat(),
        }
        tickers = [m for m in published if m["type"] == "ticker" and m["symbol"] == symbol]
        assert tickers, symbol
        assert {k: v for k, v in tickers[-1].items() if k != "type"} == ticker


async def test_a_market_that_never_traded_has_an_empty_ticker(
    redis_client: aioredis.Redis, namespaces: Any, projections: Any
) -> None:
    _, records = recorded()
    keys = namespaces()
    projection = await projections(keys)
    # Only order events: books but no trades (a consumer can see them first).
    orders_only = [r for r in records if r.topic.endswith("order-events")]
    first = orders_only[:200]
    await projection.apply(first)
    rested = {symbol for symbol in MARKETS if await redis_client.exists(keys.book_snapshot(symbol))}
    assert rested
    for symbol in rested:
        ticker = orjson.loads(await redis_client.get(keys.ticker(symbol)))
        assert (ticker["open"], ticker["last"], ticker["at"]) == (None, None, None)
        assert (ticker["trades"], Decimal(ticker["volume"]), Decimal(ticker["quote_volume"])) == (
            0,
            0,
            0,
        )
        snapshot = orjson.loads(await redis_client.get(keys.book_snapshot(symbol)))
        best_bid = snapshot["bids"][0][0] if snapshot["bids"] else None
        best_ask = snapshot["asks"][0][0] if snapshot["asks"] else None
        assert (ticker["best_bid"], ticker["best_ask"]) == (best_bid, best_ask)
    assert await asyncio.gather(
        *(redis_client.llen(keys.recent_trades(symbol)) for symbol in MARKETS)
    ) == [0, 0, 0]


@pytest.mark.parametrize("written", [False, True], ids=["lost-before-exec", "lost-after-exec"])
async def test_a_failed_write_is_retried_to_the_same_keys(
    redis_client: aioredis.Redis, namespaces: Any, projections: Any, written: bool
) -> None:
    """A batch whose transaction failed (or whose EXEC reply was lost) is applied again."""
    _, records = recorded()
    reference, keys = namespaces(), namespaces()
    batches = batches_of(records, seed=7)
    await apply_all(await projections(reference), batches)

    projection = await projections(keys)
    write = projection._write
    failures = iter(range(4, len(batches), 7))
    failing = next(failures)
    calls = 0

    async def flaky(*args: Any) -> None:
        nonlocal calls, failing
        calls += 1
        if calls == failing:
            failing = next(failures, -1)
            if written:
                await write(*args)
            raise ConnectionError("lost")
        await write(*args)

    projection._write = flaky  # type: ignore[method-assign]
    failed = 0
    for batch in batches:
        try:
            await projection.apply(batch)
        except ConnectionError:
            failed += 1
            await projection.apply(batch)
    assert failed > 3
    assert await dump(redis_client, keys) == await dump(redis_client, reference)
