"""The MySQL projection on a real MySQL (a fresh migrated database per test), fed the
events of the real processor cores, with its notifications on a real Redis."""

from __future__ import annotations

import asyncio
import functools
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import orjson
import pytest
import redis.asyncio as aioredis
from eventsourcing.persistence import StoredEvent
from sqlalchemy import Connection, func, select
from sqlalchemy.engine import Engine

from domain.accounts import Account
from domain.aggregates import account_id_for
from domain.markets import demo_markets
from domain.users import api_key_id_for, user_account_id, user_id_for
from infra import messages
from infra.dedupe import ForkedEvent
from infra.messages import Command
from infra.mysql import create_engine
from infra.read_models import (
    CANDLE_INTERVALS,
    accounts,
    api_keys,
    balances,
    candles,
    fills,
    ledger_entries,
    metadata,
    orders,
    projection_offsets,
    trades,
    users,
)
from infra.redis import create_redis
from infra.redis_keys import RedisKeys
from infra.settings import Settings
from projections.base import EventRecord, Position
from projections.mysql_projection import NAME, MySQLProjection, lag
from streams.local import LocalCluster
from tests.events import event_log
from tests.unit.test_mysql_rows import (
    SCALES,
    batches_of,
    expected_balances,
    expected_candles,
    expected_orders,
    recorded_log,
)

pytestmark = pytest.mark.integration

MARKETS = demo_markets()
Batches = list[list[EventRecord]]
Dump = dict[str, list[tuple[Any, ...]]]
MakeProjection = Callable[..., Awaitable[MySQLProjection]]


@functools.cache
def recorded() -> tuple[LocalCluster, list[EventRecord]]:
    return recorded_log(seed=11, trading=1500)


@functools.cache
def small() -> tuple[LocalCluster, list[EventRecord]]:
    return recorded_log(seed=12, trading=300, owners=8)


@pytest.fixture
def keys(unique: Callable[[str], str]) -> RedisKeys:
    return RedisKeys.for_prefix(unique("mysqlproj"))


@pytest.fixture
async def make_projection(
    read_db: Settings, settings: Settings, keys: RedisKeys
) -> AsyncIterator[MakeProjection]:
    """Started projections on the scratch database, each with an engine (and, if asked,
    a Redis client) of its own, closed after the test."""
    made: list[MySQLProjection] = []

    async def make(notify: bool = False) -> MySQLProjection:
        redis = create_redis(settings) if notify else None
        projection = MySQLProjection(create_engine(read_db), redis, keys, MARKETS)
        await projection.start()
        made.append(projection)
        return projection

    yield make
    for projection in made:
        await projection.close()


@pytest.fixture
def db(read_db: Settings) -> Iterator[Engine]:
    engine = create_engine(read_db)
    yield engine
    engine.dispose()


async def apply_all(projection: MySQLProjection, batches: Batches) -> None:
    for batch in batches:
        await projection.apply(batch)


def dump(engine: Engine, *, offsets: bool = True) -> Dump:
    """Every row of every table, in key order."""
    with engine.connect() as connection:
        return {
            table.name: [
                tuple(row)
                for row in connection.execute(select(table).order_by(*table.primary_key.columns))
            ]
            for table in metadata.sorted_tables
            if offsets or table is not projection_offsets
        }


def rows(connection: Connection, table: Any) -> list[Any]:
    return list(connection.execute(select(table)))


class Listener:
    """Every message published under a namespace, from before the projection writes."""

    def __init__(self, client: aioredis.Redis, keys: RedisKeys) -> None:
        self.pubsub = client.pubsub()
        self.keys = keys

    async def __aenter__(self) -> Listener:
        await self.pubsub.psubscribe(self.keys.channel("*"))
        confirmation = await self.pubsub.get_message(timeout=5)
        assert confirmation is not None
        assert confirmation["type"] == "psubscribe"
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.pubsub.aclose()

    async def drain(self, quiet: float = 0.5) -> list[tuple[str, dict[str, Any]]]:
        """What arrived, until nothing more does for ``quiet`` seconds."""
        out = []
        while True:
            message = await self.pubsub.get_message(ignore_subscribe_messages=True, timeout=quiet)
            if message is None:
                return out
            name = message["channel"].decode().removeprefix(self.keys.channel(""))
            out.append((name, orjson.loads(message["data"])))


def shifted(records: Sequence[EventRecord]) -> list[EventRecord]:
    """Copies of ``records`` at new offsets past each partition's end, as a processor
    that restarted would emit them again."""
    ends: Counter[Position] = Counter()
    for record in records:
        position = (record.topic, record.partition)
        ends[position] = max(ends[position], record.offset + 1)
    return [replace(r, offset=r.offset + ends[r.topic, r.partition]) for r in records]


def assert_state_equals_the_processors(
    engine: Engine, cluster: LocalCluster, records: Sequence[EventRecord]
) -> None:
    with engine.connect() as connection:
        balance_rows = {
            (r.account_id, r.asset): (r.available, r.locked) for r in rows(connection, balances)
        }
        order_rows = {
            r.order_id: (
                r.status,
                r.reason,
                r.filled_quantity,
                r.filled_notional,
                r.remaining,
                r.price,
            )
            for r in rows(connection, orders)
        }
        trade_rows = {r.trade_id: r for r in rows(connection, trades)}
        fill_rows = {(r.trade_id, r.role): r for r in rows(connection, fills)}
        ledger_rows = rows(connection, ledger_entries)
        candle_rows = rows(connection, candles)
        account_rows = rows(connection, accounts)

    # (a) balances equal the accounts, at each asset's scale.
    assert balance_rows == expected_balances(cluster)
    for (_, asset), amounts in balance_rows.items():
        for amount in amounts:
            assert amount == amount.quantize(Decimal(1).scaleb(-SCALES[asset]))
    assert {(r.account_id, r.owner) for r in account_rows} == {
        (str(a.id), a.owner) for a in cluster.accounts()
    }

    # (b) orders equal the venues' orders, rejected ones included.
    expected = expected_orders(cluster)
    assert order_rows == expected
    assert Counter(state[0] for state in expected.values())["rejected"] > 0

    # (c) every trade settled twice: a maker fill and a taker fill.
    executed = [r for r in records if type(r.event).__name__ == "TradeExecuted"]
    assert len(trade_rows) == len(executed) > 0
    assert len(fill_rows) == 2 * len(trade_rows)
    for trade_id, trade in trade_rows.items():
        maker, taker = fill_rows[trade_id, "maker"], fill_rows[trade_id, "taker"]
        assert (maker.order_id, taker.order_id) == (trade.maker_order_id, trade.taker_order_id)
        assert taker.side == trade.taker_side != maker.side
        assert maker.quantity == taker.quantity == trade.quantity

    # (d) the ledger sums to zero per asset and equals every user's balances.
    per_asset: dict[str, Decimal] = defaultdict(Decimal)
    per_bucket: dict[tuple[str, str, str], Decimal] = defaultdict(Decimal)
    for entry in ledger_rows:
        per_asset[entry.asset] += entry.amount
        per_bucket[entry.ledger_account, entry.asset, entry.bucket] += entry.amount
    assert set(per_asset) == set(SCALES)
    assert all(total == 0 for total in per_asset.values()), dict(per_asset)
    for (account_id, asset), (available, locked) in balance_rows.items():
        assert per_bucket[account_id, asset, "available"] == available
        assert per_bucket[account_id, asset, "locked"] == locked

    # (e) candles: each interval's volume is the trades' volume, and each candle is exact.
    volume = sum((t.quantity for t in trade_rows.values()), Decimal(0))
    for interval in CANDLE_INTERVALS:
        in_interval = [c for c in candle_rows if c.interval == interval]
        assert sum((c.volume for c in in_interval), Decimal(0)) == volume
        assert sum(c.trades for c in in_interval) == len(trade_rows)
    stored = {
        (c.symbol, c.interval, c.open_time): (
            c.open,
            c.high,
            c.low,
            c.close,
            c.volume,
            c.quote_volume,
            c.trades,
        )
        for c in candle_rows
    }
    assert stored == expected_candles(records)


async def test_read_models_equal_the_processors_and_accounts_are_notified(
    make_projection: MakeProjection, db: Engine, redis_client: aioredis.Redis, keys: RedisKeys
) -> None:
    cluster, records = recorded()
    projection = await make_projection(notify=True)
    batches = batches_of(records, 200, seed=1)
    async with Listener(redis_client, keys) as listener:
        started = time.perf_counter()
        await apply_all(projection, batches)
        elapsed = time.perf_counter() - started
        messages = await listener.drain()
    print(f"applied {len(records)} events in {len(batches)} batches in {elapsed:.2f}s")

    assert_state_equals_the_processors(db, cluster, records)
    positions = await projection.positions()
    assert positions == {
        (r.topic, r.partition): r.offset + 1 for r in sorted(records, key=lambda r: r.offset)
    }

    # (g) each account hears of its orders and balances; the last word is the state.
    with db.connect() as connection:
        order_rows = {r.order_id: r for r in rows(connection, orders)}
        balance_rows = {(r.account_id, r.asset): r for r in rows(connection, balances)}
    last_order: dict[str, dict[str, Any]] = {}
    last_balance: dict[tuple[str, str], dict[str, str]] = {}
    for channel, message in messages:
        kind, _, account_id = channel.partition(":")
        if kind == "orders":
            assert order_rows[message["order_id"]].account_id == account_id
            last_order[message["order_id"]] = message
        else:
            assert kind == "balances"
            assert message["account_id"] == account_id
            assets = [entry["asset"] for entry in message["balances"]]
            assert len(assets) == len(set(assets))
            for entry in message["balances"]:
                last_balance[account_id, entry["asset"]] = entry
    assert set(last_order) == set(order_rows)
    for order_id, message in last_order.items():
        row = order_rows[order_id]
        assert message["status"] == row.status
        assert message["reason"] == row.reason
        assert message["symbol"] == row.symbol
        assert Decimal(message["filled_quantity"]) == row.filled_quantity
        assert (message["remaining"] is None) == (row.remaining is None)
        if row.remaining is not None:
            assert Decimal(message["remaining"]) == row.remaining
        assert message["updated_at"].startswith(row.updated_at.isoformat())
    assert set(last_balance) == set(balance_rows)
    for key, entry in last_balance.items():
        quantum = Decimal(1).scaleb(-SCALES[key[1]])
        assert entry["available"] == f"{balance_rows[key].available.quantize(quantum):f}"
        assert entry["locked"] == f"{balance_rows[key].locked.quantize(quantum):f}"

    # One message per changed order per batch: never more than its events.
    per_order = Counter(m["order_id"] for c, m in messages if c.startswith("orders:"))
    events_per_order = Counter(
        str(r.aggregate_id) for r in records if str(r.aggregate_id) in order_rows
    )
    assert all(per_order[o] <= events_per_order[o] for o in per_order)
    trader = str(account_id_for("trader-0"))
    assert any(c == f"orders:{trader}" for c, _ in messages)
    assert any(c == f"balances:{trader}" for c, _ in messages)


async def test_applying_again_or_duplicates_at_new_offsets_changes_nothing(
    make_projection: MakeProjection, db: Engine, redis_client: aioredis.Redis, keys: RedisKeys
) -> None:
    _, records = recorded()
    batches = batches_of(records, 200, seed=2)
    first = await make_projection(notify=True)
    await apply_all(first, batches)
    before = dump(db)
    assert all(before[name] for name in ("accounts", "balances", "orders", "ledger_entries"))

    async with Listener(redis_client, keys) as listener:
        # The same batches again, to the same worker and to a restarted one.
        await apply_all(first, batches)
        assert dump(db) == before
        restarted = await make_projection(notify=True)
        await apply_all(restarted, batches_of(records, 333, seed=3))
        assert dump(db) == before

        # Re-emitted copies at new offsets (as restarted processors write them): only
        # the offsets move; a worker that never saw the originals reads the versions.
        copies = shifted(records)
        fresh_worker = await make_projection(notify=True)
        await apply_all(fresh_worker, batches_of(copies, 250, seed=4))
        after = dump(db)
        assert {k: v for k, v in after.items() if k != "projection_offsets"} == {
            k: v for k, v in before.items() if k != "projection_offsets"
        }
        assert await fresh_worker.positions() == {
            (r.topic, r.partition): r.offset + 1 for r in sorted(copies, key=lambda r: r.offset)
        }
        await apply_all(first, batches_of(copies, 500, seed=5))
        assert dump(db) == after
        assert await listener.drain() == []


async def test_a_forked_duplicate_is_refused_and_changes_nothing(
    make_projection: MakeProjection, db: Engine
) -> None:
    _, records = small()
    projection = await make_projection()
    await apply_all(projection, batches_of(records, 200, seed=6))
    before = dump(db)
    index, deposit = next(
        (i, r) for i, r in enumerate(records) if isinstance(r.event, Account.Deposited)
    )
    state = deposit.stored.state.replace(b'"amount":"', b'"amount":"1')
    assert state != deposit.stored.state
    forged = replace(
        shifted(records)[index],
        stored=StoredEvent(
            deposit.stored.originator_id,
            deposit.stored.originator_version,
            deposit.stored.topic,
            state,
        ),
    )
    with pytest.raises(ForkedEvent):
        await projection.apply([forged])
    assert dump(db) == before


async def test_a_failed_batch_leaves_nothing_behind_and_is_applied_later(
    make_projection: MakeProjection, db: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster, records = small()
    batches = batches_of(records, 150, seed=7)
    projection = await make_projection()
    half = len(batches) // 2
    await apply_all(projection, batches[:half])
    before = dump(db)

    def fail(*args: Any) -> None:
        raise RuntimeError("the database went away mid-batch")

    with monkeypatch.context() as patch:
        patch.setattr(projection, "_write_bookkeeping", fail)
        with pytest.raises(RuntimeError, match="went away"):
            await projection.apply(batches[half])
    assert dump(db) == before

    await apply_all(projection, batches[half:])
    assert_state_equals_the_processors(db, cluster, records)


async def test_two_workers_on_one_store_apply_each_batch_once(
    make_projection: MakeProjection, db: Engine
) -> None:
    """A rebalance can leave an old worker applying what a new one already did: the
    offsets each transaction locks and checks make the late one skip it."""
    cluster, records = small()
    batches = batches_of(records, 120, seed=8)
    one, other = await make_projection(), await make_projection()
    third = len(batches) // 3
    # Both on an empty store at once (their first inserts may deadlock: one goes again).
    await asyncio.gather(apply_all(one, batches[:2]), apply_all(other, batches[:3]))
    await apply_all(one, batches[:third])
    await apply_all(other, batches[: 2 * third])  # its first third is already there
    await apply_all(one, batches[third:])  # and so are one's next batches
    # Both at once, too.
    await asyncio.gather(apply_all(one, batches), apply_all(other, batches))
    assert_state_equals_the_processors(db, cluster, records)


async def test_lag_is_what_each_partition_has_left(
    make_projection: MakeProjection, db: Engine
) -> None:
    _, records = small()
    ends: dict[Position, int] = {}
    for record in records:
        ends[record.topic, record.partition] = record.offset + 1
    projection = await make_projection()
    assert await asyncio.to_thread(lag, db, NAME, ends) == ends
    batches = batches_of(records, 100, seed=9)
    await apply_all(projection, batches[:3])
    applied = await projection.positions()
    assert sum(applied.values()) == sum(len(b) for b in batches[:3])
    assert await asyncio.to_thread(lag, db, NAME, ends) == {
        p: end - applied.get(p, 0) for p, end in ends.items()
    }
    await apply_all(projection, batches[3:])
    assert set((await asyncio.to_thread(lag, db, NAME, ends)).values()) == {0}
    with db.connect() as connection:
        assert connection.scalar(select(func.count()).select_from(projection_offsets)) == len(ends)


async def test_users_and_api_keys_become_rows_and_replaying_them_changes_nothing(
    make_projection: MakeProjection, db: Engine
) -> None:
    at = datetime(2026, 2, 1, 9, 30, tzinfo=UTC)
    ann, ops = user_id_for("ann@example.com"), user_id_for("ops@example.com")

    def command(kind: str, user: UUID, command_id: str, **fields: Any) -> Command:
        body = {"user_id": str(user), **fields}
        return Command(kind, command_id, at, user_account_id(user), body)

    def register(user: UUID, email: str, role: str) -> Command:
        password_hash = f"$argon2id${email}"
        fields = {"email": email, "password_hash": password_hash, "role": role}
        return command(messages.REGISTER_USER, user, f"r-{email}", **fields)

    first_key, second_key = api_key_id_for(ann, "k1"), api_key_id_for(ann, "k2")
    _, records = event_log(
        [
            register(ann, "ann@example.com", "user"),
            register(ops, "ops@example.com", "operator"),
            command(messages.CREATE_API_KEY, ann, "k1", permissions=["trade", "read"], label="bot"),
            command(messages.CREATE_API_KEY, ann, "k2", permissions=["read"], label=""),
            command(messages.REVOKE_API_KEY, ann, "rv", key_id=first_key),
        ]
    )
    assert len(records) == 7, "two users, two accounts, two keys, one revocation"

    projection = await make_projection()
    await projection.apply(records)
    naive = at.replace(tzinfo=None)
    with db.connect() as connection:
        assert sorted(tuple(r) for r in rows(connection, users)) == sorted(
            (str(user), email, f"$argon2id${email}", role, str(user_account_id(user)), naive)
            for user, email, role in (
                (ann, "ann@example.com", "user"),
                (ops, "ops@example.com", "operator"),
            )
        )
        by_key = {r.key_id: r for r in rows(connection, api_keys)}
        assert set(by_key) == {first_key, second_key}
        assert (by_key[first_key].permissions, by_key[first_key].label) == ("read,trade", "bot")
        assert by_key[first_key].revoked_at == naive
        assert by_key[second_key].revoked_at is None
        assert {r.owner for r in rows(connection, accounts)} == {str(ann), str(ops)}
    before = dump(db)
    await projection.apply(records)
    assert dump(db) == before
