"""Benchmark of the replay tool (``bitex replay``) over a log of at least 1,000,000 events.

Run it with ``make bench-replay`` (the services must be up; the target starts
them). The last line is ``BENCH replay <events/s> events/s``.

1. **The log.** The real processor cores, wired in memory
   (``streams.local.LocalCluster``), take the test workload (accounts opened
   and funded, then limit GTC/IOC/FOK and market orders, cancels and amends,
   crossing often) until they have written BENCH_REPLAY_EVENTS events (1,000,000
   by default); the events go to fresh, prefixed topics on the real Kafka,
   each record as the processors write it (value and headers, same partitions).
2. **Replay from Kafka (the figure).** ``bitex replay --no-compare
   --processes 2`` in a fresh process, timed from its start to its exit:
   every partition read from offset 0, read-committed, each event decoded,
   applied and checked as it comes (the markets and some user-events
   partitions in one process, the other user-events partitions in a child,
   the last one split between them by account),
   then the whole-state checks and the state hash. There are no read models
   for this log, so nothing is compared. Events/s is events applied over that
   whole time; the best of BENCH_REPLAY_RUNS runs (2) is the figure. Each run
   must find no violation and print the hash of the cores' own state.
3. **Parts, for the record.** The raw read alone (records/s fetched from Kafka,
   nothing decoded), and the same replay in one process over the records held
   in memory (no Kafka, no final checks).

The topics are deleted afterwards. BENCH_REPLAY_EVENTS changes the size,
BENCH_REPLAY_SEED the workload, BENCH_REPLAY_RUNS the runs. Making the log takes
minutes: with BENCH_REPLAY_LOG=FILE the log (records and the cores' state hash) is
kept in FILE and taken from it next time, when it was made with the same size and
seed (delete FILE after changing the write side: it is not made again).
"""

from __future__ import annotations

import asyncio
import os
import pickle
import platform
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson
from aiokafka import AIOKafkaProducer

from domain.markets import demo_markets
from domain.state_hash import state_hash
from infra.kafka_admin import delete_topics, ensure_topics
from infra.settings import REPO_ROOT, Settings
from infra.topics import TopicMap
from projections.audit_read import EventReader, Position, Record
from projections.audit_replay import Cut, plan, replay_logs
from streams.local import LocalCluster
from tests.workload import Workload

EVENTS = int(os.environ.get("BENCH_REPLAY_EVENTS", "1000000"))
SEED = int(os.environ.get("BENCH_REPLAY_SEED", "2027"))
RUNS = int(os.environ.get("BENCH_REPLAY_RUNS", "2"))
LOG_FILE = os.environ.get("BENCH_REPLAY_LOG", "")
OWNERS = 1000
CHUNK = 5000
"""Commands sent to the cores between two counts of the events written."""


def generate(target: int) -> tuple[LocalCluster, dict[Position, list[Record]], int]:
    """Run the cores until they have written ``target`` events: the cluster, its event
    partitions as (offset, value, headers) records, and the commands it took."""
    topics = TopicMap()
    cluster = LocalCluster(demo_markets(), topics)
    workload = Workload(seed=SEED, owners=OWNERS)
    commands = workload.opening()
    sent = 0

    def written() -> int:
        return sum(len(cluster.logs[t, p]) for t in topics.event_topics for p in partitions(t))

    def partitions(topic: str) -> range:
        return range(topics.partitions(topic))

    while True:
        for command in commands:
            cluster.send(command)
        sent += len(commands)
        cluster.run_until_quiet()
        if written() >= target:
            break
        commands = workload.trading(CHUNK)
    logs: dict[Position, list[Record]] = {
        (topic, partition): [
            (offset, record.value, list(record.headers))
            for offset, record in enumerate(cluster.logs[topic, partition])
        ]
        for topic in topics.event_topics
        for partition in partitions(topic)
    }
    return cluster, logs, sent


Logs = dict[Position, list[Record]]


def made_log() -> tuple[Logs, str, int]:
    """The log's partitions, the cores' state hash and the commands sent: made by the
    cores, or taken from BENCH_REPLAY_LOG if it holds a log of this size and seed."""
    kept = Path(LOG_FILE) if LOG_FILE else None
    if kept is not None and kept.exists():
        with kept.open("rb") as file:
            found = pickle.load(file)
        if found["events"] == EVENTS and found["seed"] == SEED:
            print(f"log: taken from {kept}")
            return found["logs"], found["hash"], found["commands"]
    started = time.perf_counter()
    cluster, logs, commands = generate(EVENTS)
    live_hash = state_hash(cluster.accounts(), cluster.venues())
    events = sum(len(records) for records in logs.values())
    print(
        f"log: {events:,} events from {commands:,} commands through the processor cores "
        f"({events / commands:.2f} events a command), made in {time.perf_counter() - started:.0f} s"
    )
    if kept is not None:
        with kept.open("wb") as file:
            kept_log = {"events": EVENTS, "seed": SEED, "logs": logs, "hash": live_hash}
            pickle.dump({**kept_log, "commands": commands}, file, pickle.HIGHEST_PROTOCOL)
    return logs, live_hash, commands


async def publish_logs(
    settings: Settings, topics: TopicMap, logs: Mapping[Position, Sequence[Record]]
) -> None:
    """Write unprefixed event partitions to ``topics`` (prefixed), offset for offset."""
    specs = [spec for spec in topics.specs() if spec.name in topics.event_topics]
    await ensure_topics(specs, settings)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=20,
        max_batch_size=1024 * 1024,
    )
    await producer.start()
    try:
        for (topic, partition), records in sorted(logs.items()):
            name = topics.prefix + topic
            sent = []
            for _, value, headers in records:
                sent.append(
                    await producer.send(name, value, partition=partition, headers=list(headers))
                )
                if len(sent) >= 20_000:
                    await asyncio.gather(*sent)
                    sent = []
            await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def raw_read(settings: Settings, topics: TopicMap) -> tuple[int, float]:
    """Records and seconds to fetch every event partition, nothing decoded."""
    spans = await plan(settings, list(topics.event_topics), Cut())
    started = time.perf_counter()
    count = 0
    async with EventReader(settings) as reader:
        for (topic, partition), start, end in spans:
            async for fetched in reader.batches(topic, partition, start, end):
                count += sum(1 for _ in fetched)
    return count, time.perf_counter() - started


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"nproc {os.cpu_count()}; {model}; CPython {platform.python_version()}; "
        f"load average {load:.1f} at the start"
    )


def replay_command(topics: TopicMap, report: Path) -> tuple[float, float, dict[str, Any]]:
    """``bitex replay --no-compare`` in a fresh process: its wall time, the CPU time it and
    its child used, and its JSON report."""
    env = {**os.environ, "BITEX_TOPIC_PREFIX": topics.prefix}
    command = [sys.executable, "-m", "infra.cli", "replay", "--no-compare", "--quiet"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(
        [*command, "--processes", "2", "--report", str(report)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    if done.returncode != 0:
        raise SystemExit(f"bitex replay failed:\n{done.stdout}{done.stderr}")
    found: dict[str, Any] = orjson.loads(report.read_bytes())
    return seconds, cpu, found


async def main() -> None:
    settings = Settings.from_env()
    markets = demo_markets()
    print(f"machine: {machine()}")
    logs, live_hash, _ = made_log()
    events = sum(len(records) for records in logs.values())
    topics = TopicMap(prefix=f"bench-replay-{uuid.uuid4().hex[:8]}-")
    rates = []
    try:
        started = time.perf_counter()
        await publish_logs(settings, topics, logs)
        print(f"kafka: written to {topics.prefix}* in {time.perf_counter() - started:.0f} s")

        count, seconds = await raw_read(settings, topics)
        print(f"raw read alone: {count:,} records in {seconds:.2f} s, {count / seconds:,.0f}/s")

        with tempfile.TemporaryDirectory() as scratch:
            for run in range(RUNS):
                load = os.getloadavg()[0]
                seconds, cpu, report = replay_command(topics, Path(scratch) / "report.json")
                applied = report["events"]["applied"]
                ok = report["ok"] and report["state_hash"] == live_hash and applied == events
                rates.append(applied / seconds)
                print(
                    f"bitex replay --no-compare (run {run + 1}, load average {load:.1f}): "
                    f"{applied:,} events in {seconds:.2f} s, {applied / seconds:,.0f} events/s; "
                    f"CPU {cpu:.1f} s in both processes, {cpu / applied * 1e6:.1f} us an event "
                    f"(its own clock, reading and applying only: {report['seconds']:.2f} s); "
                    f"{len(report['violations'])} violations, "
                    f"state hash equals the cores': {report['state_hash'] == live_hash}"
                )
                if not ok:
                    raise SystemExit("the replay does not reproduce the cores' state")

        in_memory = replay_logs(markets, logs, TopicMap())
        rate = in_memory.counts["events"] / in_memory.seconds
        print(
            f"for the record, the replay in memory in one process, no Kafka, no final checks: "
            f"{in_memory.seconds:.2f} s, {rate:,.0f} events/s"
        )
    finally:
        await delete_topics(list(topics.event_topics), settings)
    print(f"BENCH replay {max(rates):.0f} events/s")


if __name__ == "__main__":
    asyncio.run(main())
