"""The replay tool against the real Kafka, MySQL and Redis.

1. A trading session through the real processes (both processors and the
   projections worker): ``bitex replay`` finds no violation, reaches the live
   hash (the state the same processor cores reach from the inputs Kafka
   recorded), and the read models equal the replay; a balance changed in
   MySQL is found and named; ``--rebuild`` gives back exactly the live read
   models.
2. Logs written by the cores in memory and put on Kafka as they are: ``--until``
   and ``--until-offset`` give a known intermediate state; a gap and a forged
   duplicate are found; a statement reconciles.
"""

from __future__ import annotations

import asyncio
import csv
import io
import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import orjson
import pytest
from sqlalchemy import update

from bench.bench_replay import publish_logs
from domain.markets import demo_markets
from domain.state_hash import state_hash
from infra.command_client import CommandClient
from infra.event_records import EVENT_ID, EVENT_TOPIC
from infra.kafka_admin import delete_topics
from infra.mysql import create_engine
from infra.read_models import balances
from infra.redis import create_redis
from infra.redis_keys import RedisKeys
from infra.settings import REPO_ROOT, Settings
from infra.topics import TopicMap
from projections.audit import Options, audit
from projections.audit_read import Position, Record
from projections.audit_replay import Cut
from projections.audit_statement import statement
from streams.local import LocalCluster
from streams.records import OutRecord
from streams.workers import WORKER_ROLES, WriteSide
from tests.integration.test_mysql_projection import dump as mysql_dump
from tests.integration.test_redis_projection import dump as redis_dump
from tests.workload import T0, Workload

pytestmark = pytest.mark.integration

MARKETS = demo_markets()
Logs = dict[Position, list[Record]]


def bitex(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "infra.cli", *args],
        cwd=REPO_ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


async def live_hash(side: WriteSide) -> str:
    """The state the processor cores reach from their inboxes as Kafka recorded them."""
    topics = side.topics
    recorded = {
        **await side.read_partitions(topics.account_commands),
        **await side.read_partitions(topics.matching_commands),
    }
    reference = LocalCluster({}, topics)  # markets come from the listings in the inboxes
    for (inbox, partition), records in recorded.items():
        reference.logs[inbox, partition] = [
            OutRecord(inbox, partition, b"", value, list(headers)) for value, headers in records
        ]
        while reference.step(inbox, partition, route=False):
            pass
    return state_hash(reference.accounts(), reference.venues())


async def redis_state(settings: Settings, keys: RedisKeys) -> tuple[dict[str, Any], dict[str, int]]:
    """Every read-model key, each book snapshot without its sequence, and the sequences."""
    client = create_redis(settings)
    try:
        found = await redis_dump(client, keys)
    finally:
        await client.aclose()
    sequences = {}
    for name in [name for name in found if name.endswith(":snapshot")]:
        snapshot = orjson.loads(found[name])
        sequences[name] = snapshot.pop("sequence")
        found[name] = snapshot
    return found, sequences


async def test_a_session_replays_clean_a_tampered_balance_is_named_and_a_rebuild_restores(
    settings: Settings, read_db: Settings, unique: Callable[[str], str], tmp_path: Path
) -> None:
    topics = TopicMap(prefix=unique("replay") + "-")
    keys = RedisKeys.for_prefix(topics.prefix)
    env = {"BITEX_TOPIC_PREFIX": topics.prefix, "BITEX_MYSQL_DATABASE": read_db.mysql_database}
    side = WriteSide(settings, topics, tmp_path, env=env)
    await side.create_topics()
    try:
        roles = (*WORKER_ROLES, "projections")
        for role in roles:
            side.start(role)
        for role in roles:
            await side.wait_ready(role)
        workload = Workload(seed=41, owners=20)
        async with CommandClient(settings, topics) as client:
            for commands in (workload.opening(), workload.trading(600)):
                waiters = [client.expect(command.command_id) for command in commands]
                await client.send_many(commands)
                await asyncio.wait_for(asyncio.gather(*waiters), 120)
        await side.wait_idle()
        options = Options(processes=2)
        report = await audit(read_db, topics, MARKETS, options)  # waits for the projections
        side.stop()  # a rebuild needs the projections worker stopped
        live = await live_hash(side)
        assert report.violations == []
        assert report.differences == []
        assert report.state_hash == live
        assert report.replay.counts["events"] > 2000
        assert len(report.compared) == 7

        # The CLI says the same, in its report too.
        path = tmp_path / "report.json"
        done = bitex("replay", "--quiet", "--report", str(path), env=env)
        assert done.returncode == 0, done.stdout + done.stderr
        written = orjson.loads(path.read_bytes())
        assert (written["ok"], written["state_hash"]) == (True, live)
        assert f"state hash: {live}" in done.stdout

        engine = create_engine(read_db)
        try:
            before = mysql_dump(engine)
            redis_before, sequences_before = await redis_state(settings, keys)
            account_id, asset = before["balances"][3][:2]
            with engine.begin() as connection:
                connection.execute(
                    update(balances)
                    .where(balances.c.account_id == account_id, balances.c.asset == asset)
                    .values(available=balances.c.available + 1)
                )
            tampered = bitex("replay", "--quiet", env=env)
            assert tampered.returncode == 1
            assert "violations: 0" in tampered.stdout
            assert f"mysql balances {account_id}/{asset}:" in tampered.stdout
            # And a level of a Redis book.
            bids = next(name for name in redis_before if name.endswith(":bids"))
            price = next(iter(redis_before[bids])).decode()
            client = create_redis(settings)
            try:
                await client.hset(keys.namespace + bids, price, "12.5")
            finally:
                await client.aclose()
            report = await audit(read_db, topics, MARKETS, options)
            symbol = bids.split(":")[1]
            assert sorted((d.store, d.table, d.key) for d in report.differences) == [
                ("mysql", "balances", f"{account_id}/{asset}"),
                ("redis", "book", f"{symbol} bids {price}"),
            ]
            assert report.violations == []

            started = time.monotonic()
            rebuilt = bitex("replay", "--rebuild", "--quiet", env=env)
            assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
            assert time.monotonic() - started < 60
            assert mysql_dump(engine) == before
            redis_after, sequences_after = await redis_state(settings, keys)
            assert redis_after == redis_before
            assert all(sequences_after[k] > sequences_before[k] for k in sequences_before)
        finally:
            engine.dispose()
    finally:
        side.stop()
        await side.delete_topics()
        client = create_redis(settings)
        stale = [key async for key in client.scan_iter(match=f"{keys.namespace}*")]
        if stale:
            await client.delete(*stale)
        await client.aclose()


def logs_of(cluster: LocalCluster) -> Logs:
    topics = cluster.topics
    return {
        (topic, partition): [
            (offset, record.value, list(record.headers))
            for offset, record in enumerate(cluster.logs[topic, partition])
        ]
        for topic in topics.event_topics
        for partition in range(topics.partitions(topic))
    }


async def test_cuts_gaps_forks_and_statements_on_kafka(
    settings: Settings, unique: Callable[[str], str]
) -> None:
    # Two phases of trading; the state between them is known.
    cluster = LocalCluster(MARKETS, TopicMap())
    workload = Workload(seed=43, owners=12)
    for command in workload.opening() + workload.trading(400):
        cluster.send(command)
    cluster.run_until_quiet()
    then = state_hash(cluster.accounts(), cluster.venues())
    moment = T0 + timedelta(milliseconds=workload.count)
    middle = {position: len(records) for position, records in logs_of(cluster).items()}
    for command in workload.trading(400):
        cluster.send(command)
    cluster.run_until_quiet()
    logs = logs_of(cluster)
    now = state_hash(cluster.accounts(), cluster.venues())

    clean = TopicMap(prefix=unique("replay-cut") + "-")
    broken = TopicMap(prefix=unique("replay-broken") + "-")
    names = [*clean.event_topics, *broken.event_topics]
    try:
        await publish_logs(settings, clean, logs)
        options = Options(compare=False, processes=1)
        whole = await audit(settings, clean, MARKETS, options)
        assert (whole.violations, whole.state_hash) == ([], now)

        until = await audit(settings, clean, MARKETS, Options(Cut(until=moment), False))
        assert (until.violations, until.state_hash) == ([], then)
        offsets = {(clean.prefix + topic, p): end for (topic, p), end in middle.items()}
        cut = await audit(settings, clean, MARKETS, Options(Cut(offsets=offsets), False))
        assert (cut.violations, cut.state_hash) == ([], then)
        spec = ",".join(f"{topic}:{p}={end}" for (topic, p), end in offsets.items())
        env = {"BITEX_TOPIC_PREFIX": clean.prefix}
        done = bitex("replay", "--quiet", "--until-offset", spec, env=env)
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"state hash: {then}" in done.stdout
        assert "read models: not compared (a cut is not the live state)" in done.stdout

        # A statement of an account that traded, over the second phase.
        account_id = next(
            UUID(dict(headers)[EVENT_ID].decode())
            for _, _, headers in logs[TopicMap().user_events, 0]
            if dict(headers)[EVENT_TOPIC] == b"bitex.account.TradeSettled"
        )
        found = await statement(settings, clean, MARKETS, str(account_id), moment, None)
        assert found.entries
        assert found.mismatches() == []
        assert found.violations == []
        done = bitex(
            "statement", "--account", str(account_id), "--from", moment.isoformat(), env=env
        )
        assert done.returncode == 0, done.stderr
        rows = list(csv.DictReader(io.StringIO(done.stdout)))
        assert sum(row["row"] == "entry" for row in rows) == len(found.entries)
        assert "closing equals the account's replayed balances" in done.stderr

        # A gap in one account, a forged copy of an order's fill.
        user_events, order_events = TopicMap().user_events, TopicMap().order_events
        damaged = {position: list(records) for position, records in logs.items()}
        partition = damaged[user_events, 1]
        ids = [dict(headers)[EVENT_ID] for _, _, headers in partition]
        index = next(i for i in range(40, len(ids)) if ids[i] in ids[i + 1 :])
        removed = partition.pop(index)
        fill = next(
            record
            for record in damaged[order_events, 0]
            if dict(record[2])[EVENT_TOPIC] == b"bitex.order.Filled"
        )
        forged = fill[1].replace(b'"role":"', b'"role":"x', 1)
        assert forged != fill[1]
        damaged[order_events, 0].append((0, forged, fill[2]))
        await publish_logs(settings, broken, damaged)
        report = await audit(settings, broken, MARKETS, Options(compare=False, processes=2))
        assert not report.ok
        gaps = [v for v in report.violations if v.check == "version_gap"]
        forks = [v for v in report.violations if v.check == "version_fork"]
        assert [v.events[0].aggregate_id for v in gaps] == [dict(removed[2])[EVENT_ID].decode()]
        assert [(v.events[0].aggregate_id, v.events[0].offset) for v in forks] == [
            (dict(fill[2])[EVENT_ID].decode(), len(damaged[order_events, 0]) - 1)
        ]
        done = bitex("replay", "--quiet", "--no-compare", env={"BITEX_TOPIC_PREFIX": broken.prefix})
        assert done.returncode == 1
        assert "[version_gap]" in done.stdout
        assert "[version_fork]" in done.stdout
    finally:
        await delete_topics(names, settings)
