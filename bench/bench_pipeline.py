"""Benchmark of the write side on the real Kafka: orders from command to settlement.

Run it with ``make bench-pipeline`` (the services must be up; the target starts
them). The last line is ``BENCH pipeline <orders/s> orders/s``.

Four measurements; the Kafka ones each on fresh, prefixed topics on the same broker:

1. **Raw ceiling.** A plain aiokafka loop in one process: consume records of the
   commands' size from one topic and produce each to another (idempotent,
   acks=all), as fast as it goes. This is what one Python hop over this broker
   can do on this machine, with no processing at all.
2. **Sustained throughput.** Both processors run as worker processes
   (``bitex worker accounts|matching``). Accounts are opened and funded first;
   then orders (limit GTC/IOC/FOK and market orders, crossing often, from the
   test workload) are published as fast as the producer goes. Orders/s is the
   number of orders over the time from the first publish until every order has
   its outcome and the user events (settlements) have stopped growing.
3. **Cores in process.** The same processor cores, wired in memory
   (``streams.local.LocalCluster``) on one core with no Kafka at all, take the
   same opening and orders. This is the CPU cost of the write side's own work
   (domain, events, serialization, dedupe): a ceiling no Kafka tuning can lift.
4. **Outcome latency at a fixed rate.** Orders published one by one at
   BENCH_PIPELINE_RATE per second (1,000 by default) for a few seconds; the
   latency of each order is from just before its publish until the command
   client receives its outcome (the order's status after matching).

BENCH_PIPELINE_ORDERS, BENCH_PIPELINE_RAW and BENCH_PIPELINE_SECONDS change
the sizes.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from domain.markets import demo_markets
from infra import messages
from infra.command_client import CommandClient
from infra.kafka_admin import TopicSpec, delete_topics, ensure_topics
from infra.kafka_io import end_offsets
from infra.messages import Command
from infra.settings import Settings
from infra.topics import TopicMap
from streams.local import LocalCluster
from streams.workers import WORKER_ROLES, WriteSide
from tests.workload import Workload

ORDERS = int(os.environ.get("BENCH_PIPELINE_ORDERS", "30000"))
RAW = int(os.environ.get("BENCH_PIPELINE_RAW", "100000"))
RATE = int(os.environ.get("BENCH_PIPELINE_RATE", "1000"))
SECONDS = float(os.environ.get("BENCH_PIPELINE_SECONDS", "10"))


def orders_only(workload: Workload, count: int) -> list[Command]:
    """Order placements from the test workload (its cancels and amends left out)."""
    out: list[Command] = []
    while len(out) < count:
        command = workload.next_trade()
        if command.kind == messages.PLACE_ORDER:
            out.append(command)
    return out


def cores_in_process(opening: list[Command], orders: list[Command]) -> tuple[float, float]:
    """Orders/s of the cores in memory on one core, and records they write per order."""
    cluster = LocalCluster(demo_markets())
    for command in opening:
        cluster.send(command)
    cluster.run_until_quiet()
    before = sum(len(log) for log in cluster.logs.values())
    started = time.perf_counter()
    for command in orders:
        cluster.send(command)
    cluster.run_until_quiet()
    elapsed = time.perf_counter() - started
    records = sum(len(log) for log in cluster.logs.values()) - before
    return len(orders) / elapsed, records / len(orders)


async def raw_ceiling(settings: Settings, prefix: str, size: int) -> float:
    """Records/s of a bare consume -> produce loop (one process, one hop)."""
    source, sink = f"{prefix}raw-in", f"{prefix}raw-out"
    await ensure_topics([TopicSpec(source, 4), TopicSpec(sink, 4)], settings)
    value = b"x" * size
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, enable_idempotence=True, acks="all", linger_ms=2
    )
    await producer.start()
    try:
        batch = [await producer.send(source, value, key=str(i).encode()) for i in range(RAW)]
        await asyncio.gather(*batch)
        consumer = AIOKafkaConsumer(
            source,
            bootstrap_servers=settings.kafka_bootstrap,
            group_id=f"{prefix}raw",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            max_poll_records=500,
        )
        await consumer.start()
        try:
            moved = 0
            started = time.perf_counter()
            while moved < RAW:
                records = await consumer.getmany(timeout_ms=500, max_records=500)
                futures = [
                    await producer.send(sink, r.value, key=r.key)
                    for batch_ in records.values()
                    for r in batch_
                ]
                await asyncio.gather(*futures)
                await consumer.commit()
                moved += len(futures)
            elapsed = time.perf_counter() - started
        finally:
            await consumer.stop()
    finally:
        await producer.stop()
        await delete_topics([source, sink], settings)
    return RAW / elapsed


async def wait_settled(settings: Settings, topics: TopicMap, quiet: float = 0.3) -> float:
    """Poll the user events' end offsets; return when they last grew."""
    last_total, last_change = -1, time.perf_counter()
    while time.perf_counter() - last_change < quiet:
        total = sum((await end_offsets(settings, [topics.user_events])).values())
        if total != last_total:
            last_total, last_change = total, time.perf_counter()
        await asyncio.sleep(0.05)
    return last_change


async def throughput(client: CommandClient, settings: Settings, orders: list[Command]) -> float:
    waiters = [client.expect(command.command_id) for command in orders]
    started = time.perf_counter()
    for start in range(0, len(orders), 1000):
        await client.send_many(orders[start : start + 1000])
    await asyncio.gather(*waiters)
    outcomes_done = time.perf_counter()
    settled = max(outcomes_done, await wait_settled(settings, client.topics))
    return len(orders) / (settled - started)


async def latency(client: CommandClient, orders: list[Command]) -> list[float]:
    """Outcome latency of each order, published at RATE orders per second."""
    interval = 1.0 / RATE
    samples: list[float] = []

    async def one(command: Command) -> None:
        waiter = client.expect(command.command_id)
        sent = time.perf_counter()
        await client.publish(command)
        await waiter
        samples.append(time.perf_counter() - sent)

    tasks = []
    started = time.perf_counter()
    for i, command in enumerate(orders):
        delay = started + i * interval - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(command)))
    await asyncio.gather(*tasks)
    return samples


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def main() -> None:
    settings = Settings.from_env()
    run = f"bench-{uuid.uuid4().hex[:8]}-"
    print(f"machine: {os.cpu_count()} cores; broker {settings.kafka_bootstrap}; prefix {run}")

    raw = await raw_ceiling(settings, run, size=330)
    print(f"raw consume->produce loop: {raw:,.0f} records/s ({RAW:,} records)")

    topics = TopicMap(prefix=run)
    workload = Workload(seed=11, owners=200)
    opening = workload.opening()
    orders = orders_only(workload, ORDERS)
    paced = orders_only(workload, int(RATE * SECONDS))
    in_process, per_order = cores_in_process(opening, orders)
    print(f"cores in process (no Kafka, one core): {in_process:,.0f} orders/s; "
          f"{per_order:.1f} records written per order")  # fmt: skip
    side = WriteSide(settings, topics, Path(tempfile.mkdtemp(prefix="bitex-bench-")))
    await side.create_topics()
    try:
        for role in WORKER_ROLES:
            side.start(role)
        for role in WORKER_ROLES:
            await side.wait_ready(role)
        async with CommandClient(settings, topics) as client:
            waiters = [client.expect(command.command_id) for command in opening]
            await client.send_many(opening)
            await asyncio.gather(*waiters)
            await wait_settled(settings, topics)

            rate = await throughput(client, settings, orders)
            print(f"pipeline: {rate:,.0f} orders/s sustained ({len(orders):,} orders, "
                  f"publish to settled); {rate / raw:.2f} of the raw loop's records/s, "
                  f"{rate / in_process:.2f} of the cores in process")  # fmt: skip
            await wait_settled(settings, topics)

            samples = await latency(client, paced)
            p50, p99 = percentile(samples, 0.50) * 1000, percentile(samples, 0.99) * 1000
            print(f"outcome latency at {RATE:,} orders/s: p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
                  f"max {max(samples) * 1000:.1f} ms ({len(samples):,} orders)")  # fmt: skip
    finally:
        side.stop()
        await side.delete_topics()
    print(f"BENCH pipeline {rate:.0f} orders/s")


if __name__ == "__main__":
    asyncio.run(main())
