"""The read side on the real services: processors -> Kafka -> projections -> MySQL and Redis.

The projections worker is SIGKILLed in the middle of the run and restarted;
the read models must still equal, exactly, the state rebuilt from the log.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
from sqlalchemy import select

from domain.markets import assets_of, demo_markets
from domain.matching import Side
from infra.command_client import CommandClient
from infra.mysql import create_engine
from infra.read_models import balances, orders
from infra.redis import create_redis
from infra.redis_keys import RedisKeys
from infra.settings import Settings
from infra.topics import TopicMap
from projections.runner import wait_projected
from streams.rebuild import rebuild
from streams.workers import WORKER_ROLES, WriteSide
from tests.workload import Workload

pytestmark = pytest.mark.integration

PROJECTIONS = "projections"


async def test_read_models_equal_the_log_after_the_projections_are_killed(
    settings: Settings, read_db: Settings, unique: Callable[[str], str], tmp_path: Path
) -> None:
    topics = TopicMap(prefix=unique("rs") + "-")
    side = WriteSide(
        settings, topics, tmp_path, env={"BITEX_MYSQL_DATABASE": read_db.mysql_database}
    )
    await side.create_topics()
    redis = create_redis(settings)
    keys = RedisKeys.for_prefix(topics.prefix)
    try:
        for role in (*WORKER_ROLES, PROJECTIONS):
            side.start(role)
        for role in (*WORKER_ROLES, PROJECTIONS):
            await side.wait_ready(role)
        workload = Workload(seed=5, owners=30)
        async with CommandClient(settings, topics) as client:
            opening = workload.opening()
            waiters = [client.expect(command.command_id) for command in opening]
            await client.send_many(opening)
            await asyncio.gather(*waiters)
            for round_ in range(2):
                trading = workload.trading(700)
                waiters = [client.expect(command.command_id) for command in trading]
                await client.send_many(trading)
                if round_ == 0:
                    await asyncio.sleep(0.3)
                    side.kill9(PROJECTIONS)
                    side.start(PROJECTIONS)
                    await side.wait_ready(PROJECTIONS)
                await asyncio.wait_for(asyncio.gather(*waiters), 120)
        await side.wait_idle()
        await wait_projected(read_db, topics, timeout=90)

        rebuilt = rebuild(
            demo_markets(),
            await side.read(topics.market_events),
            await side.read(topics.order_events),
            await side.read(topics.user_events),
        )
        engine = create_engine(read_db)
        try:
            with engine.connect() as connection:
                rows = connection.execute(select(balances)).all()
                order_rows = {row.order_id: row for row in connection.execute(select(orders))}
        finally:
            engine.dispose()

        assets = assets_of(demo_markets())
        projected = {
            (row.account_id, row.asset): (
                assets[row.asset].to_units(row.available),
                assets[row.asset].to_units(row.locked),
            )
            for row in rows
        }
        expected = {
            (str(account.id), asset): (holding.available, holding.locked)
            for account in rebuilt.replayer.accounts.values()
            for asset, holding in account.holdings.items()
        }
        assert projected == expected

        replayed_orders = {
            str(order.id): order
            for venue in rebuilt.replayer.venues.values()
            for order in venue.orders.values()
        }
        assert set(order_rows) == set(replayed_orders)
        for order_id, order in replayed_orders.items():
            row = order_rows[order_id]
            assert (row.status, row.filled_quantity) == (order.status.value, order.filled_quantity)

        for symbol, venue in rebuilt.replayer.venues.items():
            raw = await redis.get(keys.book_snapshot(symbol))
            snapshot = orjson.loads(raw) if raw else {"bids": [], "asks": []}
            market = venue.market
            for side_name, book_side in (("bids", Side.BUY), ("asks", Side.SELL)):
                levels = [
                    (market.ticks_to_price(price), market.lots_to_quantity(lots))
                    for price, lots in venue.book.depth(book_side, 1000)
                ]
                got = [(Decimal(price), Decimal(qty)) for price, qty in snapshot[side_name]]
                assert got == levels, (symbol, side_name)
    finally:
        side.stop()
        await side.delete_topics()
        stale = [key async for key in redis.scan_iter(match=f"{keys.namespace}*")]
        if stale:
            await redis.delete(*stale)
        await redis.aclose()
