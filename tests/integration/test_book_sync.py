"""Book sync over a live WebSocket, during a burst, on the real services (issue #5).

The processors, the projections worker and the query gateway (``bitex serve``)
run as processes, on a topic prefix, Redis namespace and scratch MySQL
database of the test's own. A seeded burst of limit (and some market) orders,
cancels and amends from several accounts, crossing so that trades happen, goes
through the command client. Two WebSocket clients subscribe to every market's
book in the middle of it and keep a local book as docs/architecture.md
("Keeping a local book") and queries/ws.py say:

- ``snapshot`` takes the snapshot the subscription sends first; on a gap it
  unsubscribes and subscribes again for a fresh snapshot;
- ``rest`` (``?batch=true``) starts from the REST snapshot alone: it buffers
  the diffs, fetches ``GET /v1/markets/<symbol>/book``, drops the buffered
  diffs at or below its sequence and applies the rest; on a gap it does the
  same again.

Each client loses one diff on purpose (of a different market), so each way
of resynchronising runs for real. Once the write side is idle and the
projections have caught up, every local book must equal the REST book level for
level at the same sequence, each client having seen no gap but the one it
caused.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect

from infra import messages
from infra.command_client import CommandClient
from infra.messages import Command
from infra.redis import create_redis
from infra.redis_keys import RedisKeys
from infra.settings import Settings
from infra.topics import TopicMap
from projections.runner import wait_projected
from streams.workers import WORKER_ROLES, WriteSide, free_port
from tests.workload import MARKETS, Workload

pytestmark = pytest.mark.integration

SYMBOLS = tuple(MARKETS)
SIDES = ("bids", "asks")
GONE = "0"
"""The quantity a diff gives a level that is gone (the documented ``"0"``)."""
ROLES = (*WORKER_ROLES, "projections", "gateway")

SEED = 505
OWNERS = 8
WARM_UP = 30
"""Trading commands before the burst."""
CHUNKS = 80
CHUNK_SIZE = 8
PAUSE = 0.03
"""The burst: CHUNKS * CHUNK_SIZE trading commands, a chunk at once every PAUSE seconds
(so the projections publish many diffs, not one per market for the whole burst)."""
SUBSCRIBE_AT = {"snapshot": 15, "rest": 30}
"""The chunk each client subscribes at (while the burst goes on)."""
FAR = 30
"""Price steps from the mid of the orders that end the burst (its own go 12 at most)."""
LOSE_AFTER = 2
"""Diffs a client applies to a book after its snapshot before it loses one on purpose."""
MIN_BUFFERED = 2
"""Diffs the REST client buffers before it fetches the snapshot..."""
BUFFER_WAIT = 0.2
"""...or seconds it buffers, whichever comes first."""
MAX_LOADS = 10
"""Snapshots a book may take before the test calls it a resync loop."""
SAMPLE_EVERY = 0.01
"""Seconds between two rounds of REST books read while the books change."""


class LocalBook:
    """One market's book on the client side: price -> quantity per side, and its sequence."""

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.sequence: int | None = None
        """The last change the book includes; None until it has a snapshot (or after a gap)."""
        self.levels: dict[str, dict[str, str]] = {side: {} for side in SIDES}
        self.buffer: list[dict[str, Any]] = []
        """Diffs held while the book waits for a (REST) snapshot."""
        self.buffering_since: float | None = None
        self.loads: list[int] = []
        """The sequence of every snapshot the book was (re)built from."""
        self.applied = 0
        """Diffs applied since the last snapshot."""
        self.dropped = 0
        """Diffs dropped as at or below the book's sequence (step 1)."""
        self.discarded = 0
        """Diffs thrown away while waiting for a fresh WebSocket snapshot."""
        self.gaps: list[tuple[int, int]] = []
        """(the book's sequence, the diff's) for every gap seen (step 3)."""
        self.history: dict[int, tuple[list[list[str]], list[list[str]]]] = {}
        """The book (bids, asks) as it was at each sequence it took."""

    @property
    def synced(self) -> bool:
        return self.sequence is not None

    def load(self, snapshot: dict[str, Any]) -> None:
        assert snapshot["symbol"] == self.symbol, snapshot
        assert len(self.loads) < MAX_LOADS, f"{self.symbol}: resynchronised {self.loads}"
        self.levels = {side: dict(snapshot[side]) for side in SIDES}
        self.sequence = snapshot["sequence"]
        self.loads.append(snapshot["sequence"])
        self.applied = 0
        self.buffering_since = None
        self._record()

    def take(self, diff: dict[str, Any]) -> bool:
        """Steps 1 and 2 for one diff; False on a gap (step 3: the book must resynchronise)."""
        assert self.sequence is not None
        assert (diff["type"], diff["symbol"]) == ("book", self.symbol), diff
        sequence = diff["sequence"]
        if sequence <= self.sequence:
            self.dropped += 1
            return True
        if sequence != self.sequence + 1:
            self.gaps.append((self.sequence, sequence))
            self.sequence = None
            return False
        for side in SIDES:
            for price, quantity in diff[side]:
                if quantity == GONE:
                    self.levels[side].pop(price, None)
                else:
                    self.levels[side][price] = quantity
        self.sequence = sequence
        self.applied += 1
        self._record()
        return True

    def _record(self) -> None:
        assert self.sequence is not None
        self.history[self.sequence] = (self.depth("bids"), self.depth("asks"))

    def hold(self, diffs: Iterable[dict[str, Any]]) -> None:
        """Buffer diffs until a snapshot comes (starting the wait if it had not)."""
        if self.buffering_since is None:
            self.buffering_since = time.monotonic()
        self.buffer.extend(diffs)

    def depth(self, side: str) -> list[list[str]]:
        """The side's levels best first, as the API writes them."""
        prices = sorted(self.levels[side], key=Decimal, reverse=side == "bids")
        return [[price, self.levels[side][price]] for price in prices]


class SyncClient:
    """A WebSocket client keeping every market's book by the documented procedure."""

    def __init__(
        self, name: str, gateway: str, http: httpx.AsyncClient, *, rest: bool, lose: str
    ) -> None:
        self.name = name
        self.url = f"ws://{gateway}/v1/ws" + ("?batch=true" if rest else "")
        self.http = http
        self.rest = rest
        """Start (and resynchronise) from the REST snapshot, not the WebSocket's."""
        self.lose = lose
        """The market whose one diff this client loses on purpose."""
        self.lost: int | None = None
        """The sequence of the diff it lost."""
        self.books = {symbol: LocalBook(symbol) for symbol in SYMBOLS}
        self.errors: list[dict[str, Any]] = []
        self.subscribed = asyncio.Event()
        self._ws: ClientConnection | None = None

    @property
    def ws(self) -> ClientConnection:
        assert self._ws is not None, "connect() first"
        return self._ws

    async def connect(self) -> None:
        self._ws = await connect(self.url, max_queue=None)

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send(orjson.dumps(message).decode())

    async def subscribe(self) -> None:
        await self.send({"op": "subscribe", "channels": [f"book:{s}" for s in SYMBOLS]})
        await asyncio.wait_for(self.subscribed.wait(), 10)
        if self.rest:
            # Live from here on: whatever is buffered or not, the snapshot may be fetched.
            for book in self.books.values():
                book.hold([])

    async def read(self) -> None:
        """Until cancelled: take every message, and fetch the REST snapshots due."""
        while True:
            try:
                raw = await asyncio.wait_for(self.ws.recv(), BUFFER_WAIT / 4)
            except TimeoutError:
                raw = None
            if raw is not None:
                decoded = orjson.loads(raw)
                for message in decoded if isinstance(decoded, list) else [decoded]:
                    await self.take(message)
            for book in self.books.values():
                if self.rest and self._fetch_due(book):
                    await self.fetch(book)

    async def take(self, message: dict[str, Any]) -> None:
        if "error" in message:
            self.errors.append(message)
            return
        if "op" in message:
            if message["op"] == "subscribed":
                self.subscribed.set()
            return
        kind, _, symbol = message["channel"].partition(":")
        assert kind == "book", message
        book = self.books[symbol]
        if message.get("type") == "snapshot":
            if not self.rest and not book.synced:
                book.load(message["data"])
            return
        diff = message["data"]
        if not book.synced:
            if self.rest:
                book.hold([diff])
            else:
                book.discarded += 1  # from before the fresh snapshot asked for
            return
        if (
            self.lost is None
            and symbol == self.lose
            and book.applied >= LOSE_AFTER
            and book.sequence is not None
            and diff["sequence"] == book.sequence + 1
        ):
            self.lost = diff["sequence"]
            return
        if not book.take(diff):
            await self.resync(book, diff)

    async def resync(self, book: LocalBook, diff: dict[str, Any]) -> None:
        if self.rest:
            book.hold([diff])
        else:
            channel = f"book:{book.symbol}"
            await self.send({"op": "unsubscribe", "channels": [channel]})
            await self.send({"op": "subscribe", "channels": [channel]})

    def _fetch_due(self, book: LocalBook) -> bool:
        since = book.buffering_since
        if book.synced or since is None:
            return False
        return len(book.buffer) >= MIN_BUFFERED or time.monotonic() - since >= BUFFER_WAIT

    async def fetch(self, book: LocalBook) -> None:
        """Fetch the REST snapshot, drop the buffered diffs at or below it, apply the rest."""
        snapshot = await rest_book(self.http, book.symbol)
        book.load(snapshot)
        buffered, book.buffer = book.buffer, []
        for i, diff in enumerate(buffered):
            if not book.take(diff):
                book.hold(buffered[i:])
                return


class RestSampler:
    """Reads the REST books over and over, keeping one per market and sequence."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self.books: dict[str, dict[int, dict[str, Any]]] = {symbol: {} for symbol in SYMBOLS}
        self.conflicts: list[tuple[dict[str, Any], dict[str, Any]]] = []
        """Two REST books with one sequence and different levels."""

    def keep(self, book: dict[str, Any]) -> None:
        kept = self.books[book["symbol"]].setdefault(book["sequence"], book)
        if kept != book:
            self.conflicts.append((kept, book))

    async def run(self) -> None:
        while True:
            for symbol in SYMBOLS:
                self.keep(await rest_book(self.http, symbol))
            await asyncio.sleep(SAMPLE_EVERY)


async def rest_book(http: httpx.AsyncClient, symbol: str) -> dict[str, Any]:
    response = await http.get(f"/v1/markets/{symbol}/book", params={"depth": 1000})
    assert response.status_code == 200, response.text
    book: dict[str, Any] = response.json()
    return book


async def execute(client: CommandClient, commands: list[Command]) -> None:
    """Send commands at once and wait for every outcome."""
    waiters = [client.expect(command.command_id) for command in commands]
    await client.send_many(commands)
    await asyncio.wait_for(asyncio.gather(*waiters), 60)


async def warm_up(client: CommandClient, workload: Workload, http: httpx.AsyncClient) -> None:
    """Orders until every market's book has changed, so that the burst finds the processors
    past the rebuild of their cores on a first input, and the projections publishing."""
    await execute(client, workload.trading(WARM_UP))
    deadline = time.monotonic() + 20
    while not all([(await rest_book(http, symbol))["sequence"] for symbol in SYMBOLS]):
        assert time.monotonic() < deadline, "the books did not change after the warm-up"
        await asyncio.sleep(0.1)


def far_from_the_money(workload: Workload) -> list[Command]:
    """A buy and a sell in every market, priced beyond anything the burst trades at: the
    last orders of the burst, so that no book ends with an empty side."""
    commands = []
    for i, (symbol, (mid, step, lot, _)) in enumerate(MARKETS.items()):
        for side, price in (("buy", mid - FAR * step), ("sell", mid + FAR * step)):
            owner = workload.owners[i % len(workload.owners)]
            fields: dict[str, Any] = {"symbol": symbol, "side": side, "price": str(price)}
            fields |= {"type": "limit", "quantity": str(lot * 50), "time_in_force": "GTC"}
            commands.append(workload.command(messages.PLACE_ORDER, owner, **fields))
    return commands


async def burst(client: CommandClient, workload: Workload, clients: list[SyncClient]) -> None:
    """The trading burst; each client subscribes (without pausing it) at its chunk."""
    waiters = []
    subscribing = []
    for chunk in range(CHUNKS):
        subscribing += [
            asyncio.create_task(c.subscribe()) for c in clients if SUBSCRIBE_AT[c.name] == chunk
        ]
        commands = workload.trading(CHUNK_SIZE)
        if chunk == CHUNKS - 1:
            commands += far_from_the_money(workload)
        waiters += [client.expect(command.command_id) for command in commands]
        await client.send_many(commands)
        await asyncio.sleep(PAUSE)
    await asyncio.wait_for(asyncio.gather(*subscribing, *waiters), 60)


async def wait_caught_up(
    clients: list[SyncClient],
    readers: list[asyncio.Task[None]],
    sequences: dict[str, int],
    timeout: float = 10,
) -> None:
    """Until every client's books have every diff up to the given sequences."""
    deadline = time.monotonic() + timeout
    while True:
        for reader in readers:
            if reader.done():
                reader.result()  # a reader that failed (or a closed socket) fails the test
                raise AssertionError("a client stopped reading")
        behind = {
            (client.name, symbol): (book.sequence, sequences[symbol])
            for client in clients
            for symbol, book in client.books.items()
            if book.sequence is None or book.sequence < sequences[symbol]
        }
        if not behind:
            return
        assert time.monotonic() < deadline, f"(client, market): (local, REST) sequence {behind}"
        await asyncio.sleep(0.05)


async def check(
    http: httpx.AsyncClient,
    clients: list[SyncClient],
    expected: dict[str, dict[str, Any]],
    sampler: RestSampler,
) -> None:
    """Every client's books against the REST books, at the end and on the way."""
    assert sampler.conflicts == []
    for symbol, rest in expected.items():
        mid, step, _, _ = MARKETS[symbol]
        assert Decimal(rest["bids"][-1][0]) == mid - FAR * step, (symbol, rest)
        assert Decimal(rest["asks"][-1][0]) == mid + FAR * step, (symbol, rest)
        trades = await http.get(f"/v1/markets/{symbol}/trades", params={"limit": 1})
        assert trades.status_code == 200, trades.text
        assert trades.json()["items"], f"no trade in {symbol}"
    # The burst left books to compare, besides the orders that end it.
    assert sum(len(rest["bids"]) + len(rest["asks"]) for rest in expected.values()) > 4 * 6
    for client in clients:
        assert client.errors == [], client.name
        assert client.lost is not None, f"{client.name} lost no diff: the burst was over"
        for symbol, book in client.books.items():
            where = (client.name, symbol)
            assert book.sequence == expected[symbol]["sequence"], where
            for side in SIDES:
                assert book.depth(side) == expected[symbol][side], where
            if symbol == client.lose:
                # Exactly the diff it lost made a gap, and one resync mended it.
                assert book.gaps == [(client.lost - 1, client.lost + 1)], where
                assert len(book.loads) == 2, (where, book.loads)
            else:
                assert book.gaps == [], where
                assert len(book.loads) == 1, (where, book.loads)
            # It joined mid-burst: its first snapshot had changes in it, and more followed.
            assert 0 < book.loads[0] < expected[symbol]["sequence"], (where, book.loads)
            # At every sequence both saw, the client's book was the REST book.
            sampled = sampler.books[symbol]
            both = sorted(set(book.history) & set(sampled))
            for sequence in both:
                rest = sampled[sequence]
                assert book.history[sequence] == (rest["bids"], rest["asks"]), (where, sequence)
            # ...and the REST books read on the way caught most of its sequences.
            assert len(both) * 2 >= len(book.history), (where, both, sorted(book.history))
    # The REST client started from buffered diffs, some already in its snapshot.
    rest_client = next(client for client in clients if client.rest)
    assert sum(book.dropped for book in rest_client.books.values()) > 0
    # Nothing moved while the books were compared.
    for symbol, rest in expected.items():
        assert await rest_book(http, symbol) == rest, symbol


async def test_a_websocket_client_in_sync_mid_burst_ends_with_the_rest_book(
    settings: Settings, read_db: Settings, unique: Callable[[str], str], tmp_path: Path
) -> None:
    topics = TopicMap(prefix=unique("bs") + "-")
    gateway = f"127.0.0.1:{free_port()}"
    side = WriteSide(
        settings,
        topics,
        tmp_path,
        env={
            "BITEX_MYSQL_DATABASE": read_db.mysql_database,
            "BITEX_HTTP_HOST": "127.0.0.1",
            "BITEX_HTTP_PORT": gateway.rpartition(":")[2],
        },
    )
    await side.create_topics()
    redis = create_redis(settings)
    keys = RedisKeys.for_prefix(topics.prefix)
    clients: list[SyncClient] = []
    readers: list[asyncio.Task[None]] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        for role in ROLES:
            side.start(role)
        for role in ROLES:
            await side.wait_ready(role)
        async with (
            httpx.AsyncClient(base_url=f"http://{gateway}", timeout=10) as http,
            CommandClient(settings, topics) as commands,
        ):
            clients = [
                SyncClient("snapshot", gateway, http, rest=False, lose=SYMBOLS[0]),
                SyncClient("rest", gateway, http, rest=True, lose=SYMBOLS[1]),
            ]
            for client in clients:
                await client.connect()
                readers.append(asyncio.create_task(client.read()))
            tasks += readers

            workload = Workload(seed=SEED, owners=OWNERS)
            await execute(commands, workload.opening())
            await warm_up(commands, workload, http)
            sampler = RestSampler(http)
            sampling = asyncio.create_task(sampler.run())
            tasks.append(sampling)
            await burst(commands, workload, clients)
            await side.wait_idle()
            await wait_projected(read_db, topics, timeout=30)

            expected = {symbol: await rest_book(http, symbol) for symbol in SYMBOLS}
            await wait_caught_up(clients, readers, {s: b["sequence"] for s, b in expected.items()})
            if sampling.done():
                sampling.result()
            sampling.cancel()
            for book in expected.values():
                sampler.keep(book)
            await check(http, clients, expected, sampler)
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        for client in clients:
            with contextlib.suppress(Exception):
                await client.close()
        side.stop()
        await side.delete_topics()
        stale = [key async for key in redis.scan_iter(match=f"{keys.namespace}*")]
        if stale:
            await redis.delete(*stale)
        await redis.aclose()
