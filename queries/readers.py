"""Reads of the MySQL read models, one query per call, rows out as JSON-ready dicts;
and ``Batched``, which turns concurrent reads of single keys into one read of many.

These are plain synchronous functions on a SQLAlchemy engine: the app runs
them in a few worker threads of its own (``READ_THREADS``). Lists are
keyset-paginated, newest first: each takes the sort key after which to
continue (from the cursor) and answers its items and, when there are more, the
sort key of its last item.

Every read is one statement on an autocommit connection (``read_engine``):
each sees the latest commit, and a connection goes back to the pool without a
ROLLBACK round trip.

The reads every client repeats all the time go through ``Batched``: the
balances (``balances_of``: one query for every account asked meanwhile) and,
with ``BatchedGets``, every Redis GET (sessions, book snapshots, tickers: one
MGET). A read is never answered by a query sent before it was asked, so
batching changes no answer: only how many round trips they take.

Amounts are written at fixed scales, as the Redis projection writes them:
prices at the market's tick size, quantities at the base asset's scale,
notionals and quote volumes at the quote's; balances, ledger amounts,
spending, receipts and fees at their own asset's.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Generic, TypeVar

import redis.asyncio as aioredis
from redis.typing import KeyT
from sqlalchemy import ColumnElement, Row, and_, or_, select
from sqlalchemy.engine import Engine

from domain.markets import Market, assets_of
from infra.formats import amount_text, moment_text
from infra.mysql import create_engine
from infra.read_models import balances, candles, fills, ledger_entries, orders, trades
from infra.settings import Settings
from queries.encoding import minute, optional_amount
from queries.params import Key

Item = dict[str, Any]
Page = tuple[list[Item], Key | None]

READ_THREADS = 4
"""Threads that run the reads, and connections pooled for them. Few on purpose: the
driver (PyMySQL) is pure Python, so more threads only take the GIL from the event
loop more often, and every request waits longer."""


def read_engine(settings: Settings) -> Engine:
    """An engine for one-statement reads: autocommit, so no transaction is ever open
    and none is rolled back when a connection returns to the pool. Connections
    are still pinged when taken from the pool (``infra.mysql``), so one the
    server dropped is replaced rather than failing a request. The overflow
    serves the API-key lookups, which run on other threads."""
    return create_engine(
        settings,
        pool_size=READ_THREADS,
        max_overflow=10,
        isolation_level="AUTOCOMMIT",
        skip_autocommit_rollback=True,
    )


K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

MAX_BATCH = 500
"""Keys one batched read asks for at most; more wait for the next."""


class Batched(Generic[K, V]):
    """Concurrent reads of single keys, made as reads of many keys, one at a time.

    ``get(key)`` queues the key. While no read is in flight, a read starts with
    every key queued so far; keys queued while it is in flight wait for the
    next, which starts as soon as it lands. So no answer comes from a read sent
    before its key was asked, and at low load a key is read at once, alone.
    Under load there is one read in flight and the next one filling up: N
    concurrent requests cost about two round trips, not N.

    ``read(keys)`` answers a mapping with every key it was given (distinct keys,
    at most MAX_BATCH). If it fails, every request of that batch gets its error.
    A request that gives up (its client left) takes nothing from the others.
    """

    def __init__(self, read: Callable[[list[K]], Awaitable[Mapping[K, V]]]) -> None:
        self._read = read
        self._queued: dict[K, list[asyncio.Future[V]]] = {}
        self._task: asyncio.Task[None] | None = None

    async def get(self, key: K) -> V:
        waiter: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._queued.setdefault(key, []).append(waiter)
        if self._task is None:
            self._task = asyncio.create_task(self._run())
        return await waiter

    async def _run(self) -> None:
        batch: dict[K, list[asyncio.Future[V]]] = {}
        try:
            while self._queued:
                batch = self._take()
                try:
                    found = await self._read(list(batch))
                    answers = [(waiters, found[key]) for key, waiters in batch.items()]
                except Exception as error:
                    for waiters in batch.values():
                        for waiter in waiters:
                            if not waiter.done():
                                waiter.set_exception(error)
                else:
                    for waiters, value in answers:
                        for waiter in waiters:
                            if not waiter.done():
                                waiter.set_result(value)
                batch = {}
        finally:
            self._task = None
            # Only when cancelled (the app stops): nobody will answer these any more.
            for waiters in (*batch.values(), *self._queued.values()):
                for waiter in waiters:
                    waiter.cancel()
            self._queued.clear()

    def _take(self) -> dict[K, list[asyncio.Future[V]]]:
        if len(self._queued) <= MAX_BATCH:
            batch, self._queued = self._queued, {}
            return batch
        keys = list(self._queued)[:MAX_BATCH]
        return {key: self._queued.pop(key) for key in keys}

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class BatchedGets(aioredis.Redis):
    """A Redis client whose GETs in flight together go to Redis as one MGET.

    The gateway hands this client to everything that reads Redis (the session
    lookup of ``infra.auth``, the book snapshots, the tickers), so the GETs of
    every concurrent request share round trips: see ``Batched``. A GET of a key
    that holds no string answers None, as MGET does (the gateway only reads strings).
    Every other command is redis-py's own.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._gets: Batched[KeyT, bytes | None] = Batched(self._mget)

    async def get(self, name: KeyT) -> bytes | None:
        return await self._gets.get(name)

    async def _mget(self, names: list[KeyT]) -> dict[KeyT, bytes | None]:
        values = await self.mget(names)
        return {
            name: value.encode() if isinstance(value, str) else value
            for name, value in zip(names, values, strict=True)
        }

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await self._gets.close()
        await super().aclose(close_connection_pool)


def _folded(account_id: str) -> str:
    return account_id.rstrip(" ").casefold()


def before(columns: Sequence[ColumnElement[Any]], key: Key) -> ColumnElement[bool]:
    """``columns < key`` in lexicographic order, spelled out so MySQL range-scans its index:
    ``c0 < k0 OR (c0 = k0 AND c1 < k1) OR ...``."""
    clauses = []
    for i, (column, value) in enumerate(zip(columns, key, strict=True)):
        equal = [c == v for c, v in zip(columns[:i], key[:i], strict=True)]
        clauses.append(and_(*equal, column < value))
    return or_(*clauses)


@dataclass(frozen=True, slots=True)
class Scales:
    price: int | None
    base: int | None
    quote: int | None


class ReadModels:
    """The MySQL side of the query gateway."""

    def __init__(self, engine: Engine, markets: dict[str, Market]) -> None:
        self.engine = engine
        self.markets = markets
        self.scales = {code: asset.scale for code, asset in assets_of(markets).items()}

    def learn(self, market: Market) -> None:
        """A market listed since: its assets' scales (``markets`` itself is shared)."""
        for asset in (market.base, market.quote):
            self.scales.setdefault(asset.code, asset.scale)

    def _scales(self, symbol: str) -> Scales:
        """A market's scales; an unlisted market's amounts are written in full."""
        market = self.markets.get(symbol)
        if market is None:
            return Scales(None, None, None)
        return Scales(market.price_scale, market.base.scale, market.quote.scale)

    def _page(self, query: Any, limit: int, key_of: Any, item_of: Any) -> Page:
        with self.engine.connect() as connection:
            rows = connection.execute(query.limit(limit + 1)).all()
        items = [item_of(row) for row in rows[:limit]]
        return items, key_of(rows[limit - 1]) if len(rows) > limit else None

    # -- public ------------------------------------------------------------------

    def trades(self, symbol: str, limit: int, after: Key | None) -> Page:
        scale = self._scales(symbol)
        query = select(trades).where(trades.c.symbol == symbol)
        if after is not None:
            query = query.where(trades.c.seq < after[0])

        def item(row: Row[Any]) -> Item:
            return {
                "trade_id": row.trade_id,
                "symbol": row.symbol,
                "sequence": row.seq,
                "price": amount_text(row.price, scale.price),
                "quantity": amount_text(row.quantity, scale.base),
                "taker_side": row.taker_side,
                "at": moment_text(row.at),
            }

        return self._page(query.order_by(trades.c.seq.desc()), limit, lambda row: (row.seq,), item)

    def candles(
        self,
        symbol: str,
        interval: str,
        start: datetime | None,
        end: datetime | None,
        limit: int,
        after: Key | None,
    ) -> Page:
        scale = self._scales(symbol)
        c = candles.c
        query = select(candles).where(c.symbol == symbol, c.interval == interval)
        if start is not None:
            query = query.where(c.open_time >= start)
        if end is not None:
            query = query.where(c.open_time < end)
        if after is not None:
            query = query.where(c.open_time < after[0])

        def item(row: Row[Any]) -> Item:
            return {
                "open_time": minute(row.open_time),
                "open": amount_text(row.open, scale.price),
                "high": amount_text(row.high, scale.price),
                "low": amount_text(row.low, scale.price),
                "close": amount_text(row.close, scale.price),
                "volume": amount_text(row.volume, scale.base),
                "quote_volume": amount_text(row.quote_volume, scale.quote),
                "trades": row.trades,
            }

        return self._page(
            query.order_by(c.open_time.desc()), limit, lambda row: (row.open_time,), item
        )

    # -- private -------------------------------------------------------------------

    def balances(self, account_id: str) -> list[Item]:
        """Every listed asset (zero when the account never held it), then any other."""
        return self.balances_of([account_id])[account_id]

    def balances_of(self, account_ids: Sequence[str]) -> dict[str, list[Item]]:
        """``balances`` of several accounts, in one query."""
        c = balances.c
        query = select(c.account_id, c.asset, c.available, c.locked).where(
            c.account_id.in_(account_ids)
        )
        with self.engine.connect() as connection:
            rows = connection.execute(query).all()
        held: dict[str, dict[str, tuple[Decimal, Decimal]]] = {a: {} for a in account_ids}
        # The column compares as its collation does (case and trailing spaces aside):
        # a row belongs to every id asked that it matches, as with ``account_id = :id``.
        asked: dict[str, list[str]] = {}
        for account_id in held:
            asked.setdefault(_folded(account_id), []).append(account_id)
        for account_id, asset, available, locked in rows:
            for owner in asked.get(_folded(account_id), ()):
                held[owner][asset] = (available, locked)
        zero = (Decimal(0), Decimal(0))
        return {
            account_id: [
                {
                    "asset": asset,
                    "available": amount_text(found.get(asset, zero)[0], self.scales.get(asset)),
                    "locked": amount_text(found.get(asset, zero)[1], self.scales.get(asset)),
                }
                for asset in sorted(set(self.scales) | set(found))
            ]
            for account_id, found in held.items()
        }

    def _order(self, row: Row[Any]) -> Item:
        scale = self._scales(row.symbol)
        return {
            "order_id": row.order_id,
            "client_order_id": row.client_order_id,
            "symbol": row.symbol,
            "side": row.side,
            "type": row.type,
            "price": optional_amount(row.price, scale.price),
            "quantity": optional_amount(row.quantity, scale.base),
            "quote_quantity": optional_amount(row.quote_quantity, scale.quote),
            "time_in_force": row.time_in_force,
            "post_only": bool(row.post_only),
            "self_trade_prevention": row.stp,
            "status": row.status,
            "reason": row.reason,
            "filled_quantity": amount_text(row.filled_quantity, scale.base),
            "filled_notional": amount_text(row.filled_notional, scale.quote),
            "remaining": optional_amount(row.remaining, scale.base),
            "created_at": moment_text(row.created_at),
            "updated_at": moment_text(row.updated_at),
        }

    def orders(
        self,
        account_id: str,
        symbol: str | None,
        statuses: frozenset[str] | None,
        limit: int,
        after: Key | None,
    ) -> Page:
        c = orders.c
        query = select(orders).where(c.account_id == account_id)
        if symbol is not None:
            query = query.where(c.symbol == symbol)
        if statuses is not None:
            query = query.where(c.status.in_(sorted(statuses)))
        if after is not None:
            query = query.where(before((c.created_at, c.order_id), after))
        return self._page(
            query.order_by(c.created_at.desc(), c.order_id.desc()),
            limit,
            lambda row: (row.created_at, row.order_id),
            self._order,
        )

    def order(self, account_id: str, order_id: str) -> Item | None:
        """The caller's order, or None: someone else's order is as missing as a missing one."""
        query = select(orders).where(
            orders.c.order_id == order_id, orders.c.account_id == account_id
        )
        with self.engine.connect() as connection:
            row = connection.execute(query).first()
        return None if row is None else self._order(row)

    def fills(
        self,
        account_id: str,
        symbol: str | None,
        order_id: str | None,
        limit: int,
        after: Key | None,
    ) -> Page:
        c = fills.c
        query = select(fills).where(c.account_id == account_id)
        if symbol is not None:
            query = query.where(c.symbol == symbol)
        if order_id is not None:
            query = query.where(c.order_id == order_id)
        if after is not None:
            query = query.where(before((c.at, c.trade_id, c.role), after))

        def item(row: Row[Any]) -> Item:
            scale = self._scales(row.symbol)
            return {
                "trade_id": row.trade_id,
                "order_id": row.order_id,
                "symbol": row.symbol,
                "side": row.side,
                "role": row.role,
                "price": amount_text(row.price, scale.price),
                "quantity": amount_text(row.quantity, scale.base),
                "spent_asset": row.spent_asset,
                "spent": amount_text(row.spent, self.scales.get(row.spent_asset)),
                "received_asset": row.received_asset,
                "received": amount_text(row.received, self.scales.get(row.received_asset)),
                "fee_asset": row.received_asset,
                "fee": amount_text(row.fee, self.scales.get(row.received_asset)),
                "at": moment_text(row.at),
            }

        return self._page(
            query.order_by(c.at.desc(), c.trade_id.desc(), c.role.desc()),
            limit,
            lambda row: (row.at, row.trade_id, row.role),
            item,
        )

    def ledger(self, account_id: str, asset: str | None, limit: int, after: Key | None) -> Page:
        c = ledger_entries.c
        query = select(ledger_entries).where(c.ledger_account == account_id)
        if asset is not None:
            query = query.where(c.asset == asset)
        if after is not None:
            query = query.where(before((c.at, c.event_version, c.event_id, c.leg), after))

        def item(row: Row[Any]) -> Item:
            return {
                "event_id": row.event_id,
                "event_version": row.event_version,
                "leg": row.leg,
                "asset": row.asset,
                "amount": amount_text(row.amount, self.scales.get(row.asset)),
                "bucket": row.bucket,
                "kind": row.kind,
                "reference": row.reference,
                "at": moment_text(row.at),
            }

        return self._page(
            query.order_by(c.at.desc(), c.event_version.desc(), c.event_id.desc(), c.leg.desc()),
            limit,
            lambda row: (row.at, row.event_version, row.event_id, row.leg),
            item,
        )
