"""Kill -9 the processors again and again under load: nothing is lost, nothing doubled.

The reference is the same commands processed once, in process, by the same
processor cores, each core taking its inbox exactly as Kafka recorded it
(which commands and which relays, in which order). Across partitions, the
order in which the processors' messages meet depends on timing; within each
inbox it is fixed by the log, and that is all a core's output depends on.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from pathlib import Path

import pytest

from domain.accounts import Account
from domain.invariants import check_state
from domain.markets import demo_markets
from domain.orders import Order
from domain.state_hash import state_hash
from domain.venue import TradeTape
from infra.command_client import CommandClient
from infra.event_records import Headers, stored_event
from infra.serialization import EventMapper
from infra.settings import Settings
from infra.topics import TopicMap
from streams.local import LocalCluster
from streams.rebuild import rebuild
from streams.records import OutRecord
from streams.workers import WORKER_ROLES, WriteSide
from tests.workload import Workload

pytestmark = pytest.mark.integration

COMMANDS = 20_000
KILLS_PER_ROLE = 4


async def test_kill_minus_9_loses_nothing_and_doubles_nothing(
    settings: Settings, unique: object, tmp_path: Path
) -> None:
    # Frequent snapshots, so that restarts go through them as well as through the log.
    side = WriteSide(
        settings,
        TopicMap(prefix=unique("kill9") + "-"),  # type: ignore[operator]
        tmp_path,
        env={"BITEX_SNAPSHOT_EVERY": "1500"},
    )
    await side.create_topics()
    workload = Workload(seed=2026, owners=60)
    commands = workload.opening() + workload.trading(COMMANDS)
    rng = random.Random(9)
    try:
        for role in WORKER_ROLES:
            side.start(role)
        for role in WORKER_ROLES:
            await side.wait_ready(role)

        async def publish() -> None:
            async with CommandClient(settings, side.topics) as client:
                for start in range(0, len(commands), 250):
                    await client.send_many(commands[start : start + 250])
                    await asyncio.sleep(0.25)

        async def kill_repeatedly() -> None:
            roles = [role for role in WORKER_ROLES for _ in range(KILLS_PER_ROLE)]
            rng.shuffle(roles)
            for role in roles:
                await asyncio.sleep(rng.uniform(1.5, 4.0))
                side.kill9(role)
                side.start(role)
                await side.wait_ready(role)

        await asyncio.gather(publish(), kill_repeatedly())
        await side.wait_idle(timeout=240)
    finally:
        side.stop()

    assert all(side.starts[role] == KILLS_PER_ROLE + 1 for role in WORKER_ROLES)
    logs = "".join(side.log_path(role).read_text() for role in WORKER_ROLES)
    assert "snapshot at input offset" in logs
    topics = side.topics
    recorded = {
        **await side.read_partitions(topics.account_commands),
        **await side.read_partitions(topics.matching_commands),
    }
    events = {
        topic: await side.read(topic)
        for topic in (topics.market_events, topics.order_events, topics.user_events)
    }

    # 1. Everything the log holds replays cleanly: no gap, no fork, books balance.
    markets = demo_markets()
    live = rebuild(markets, *events.values(), keep_bytes=True)
    assert live.duplicates > 0, "the kills should have caused re-emitted events"
    accounts, venues = live.replayer.accounts.values(), live.replayer.venues.values()
    assert check_state(accounts, venues, live.ledger) == []

    # 2. Every trade has one maker fill, one taker fill and two settlements.
    mapper = EventMapper()
    decoded = [
        mapper.to_domain_event(stored)
        for stream in events.values()
        for value, headers in stream
        if (stored := stored_event(value, headers)) is not None
    ]
    trades = {e.trade_id for e in decoded if isinstance(e, TradeTape.TradeExecuted)}  # type: ignore[attr-defined]
    fills = Counter(
        (e.trade_id, e.role)  # type: ignore[attr-defined]
        for e in {(e.originator_id, e.originator_version): e for e in decoded}.values()
        if isinstance(e, Order.PartiallyFilled)
    )
    settled = Counter(
        e.trade_id  # type: ignore[attr-defined]
        for e in {(e.originator_id, e.originator_version): e for e in decoded}.values()
        if isinstance(e, Account.TradeSettled)
    )
    assert len(trades) > 1000
    assert all(fills[t, "maker"] == 1 and fills[t, "taker"] == 1 for t in trades)
    assert set(settled) == trades
    assert set(settled.values()) == {2}

    # 3. The reference: the same cores, in process, over the inboxes as recorded.
    reference = LocalCluster({}, topics)  # markets come from the listings in the inboxes
    produced: list[OutRecord] = []
    for (inbox, partition), records in recorded.items():
        reference.logs[inbox, partition] = [
            OutRecord(inbox, partition, b"", value, headers) for value, headers in records
        ]
        while reference.step(inbox, partition, route=False, sink=produced):
            pass
    commands_seen = sum(
        1
        for (inbox, _), records in recorded.items()
        if inbox == topics.account_commands
        for value, headers in records
        if not headers
    )
    listings = len(side.markets)  # the harness listed the markets by command first
    assert commands_seen == len(commands) + listings, "every command reached the inbox once"
    assert state_hash(reference.accounts(), reference.venues()) == state_hash(accounts, venues)

    # 4. What the reference emits is exactly what Kafka holds, byte for byte.
    emitted = {}
    for record in produced:
        stored = stored_event(record.value, record.headers)
        if stored is not None and record.topic in events:
            emitted[stored.originator_id, stored.originator_version] = stored.state
    assert emitted == live.by_id

    # 5. Every message the reference sends between processors is in the inbox it targets.
    inbox_messages = {
        (inbox, bytes(value), _identity(headers))
        for (inbox, _), records in recorded.items()
        for value, headers in records
    }
    for record in produced:
        if record.topic in (topics.account_commands, topics.matching_commands):
            assert (record.topic, record.value, _identity(record.headers)) in inbox_messages
    await side.delete_topics()  # kept for inspection when anything above fails


def _identity(headers: Headers) -> tuple[tuple[str, bytes], ...]:
    return tuple((key, bytes(value)) for key, value in headers)
