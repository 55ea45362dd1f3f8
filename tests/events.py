"""Event records made by the real processor cores in memory, for projection tests.

``event_log`` runs commands through ``LocalCluster`` (the same cores the
workers run) and returns what they wrote to the event topics, decoded as the
projections receive it, each with the partition and offset it would have on
Kafka. The cluster comes back too, for the domain state to compare with.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence

from domain.markets import Market, demo_markets
from infra.messages import Command
from infra.topics import TopicMap
from projections.base import Decoder, EventRecord
from streams.local import LocalCluster


def event_log(
    commands: Iterable[Command],
    markets: dict[str, Market] | None = None,
    topics: TopicMap | None = None,
) -> tuple[LocalCluster, list[EventRecord]]:
    """Every event the commands produced, topic by topic, partition by partition."""
    topics = topics or TopicMap()
    cluster = LocalCluster(markets or demo_markets(), topics)
    for command in commands:
        cluster.send(command)
    cluster.run_until_quiet()
    decoder = Decoder()
    records: list[EventRecord] = []
    for topic in (topics.market_events, topics.order_events, topics.user_events):
        for partition in range(topics.partitions(topic)):
            for offset, out in enumerate(cluster.logs[topic, partition]):
                record = decoder.decode(topic, partition, offset, out.value, out.headers)
                if record is not None:
                    records.append(record)
    return cluster, records


def consumption_order(records: Sequence[EventRecord], seed: int) -> list[EventRecord]:
    """The records as a consumer of every event partition might take them: each
    partition in order, the partitions interleaved in runs of random length."""
    queues: dict[tuple[str, int], list[EventRecord]] = {}
    for record in records:
        queues.setdefault((record.topic, record.partition), []).append(record)
    rng = random.Random(seed)
    taken: list[EventRecord] = []
    while queues:
        key = rng.choice(sorted(queues))
        run = rng.randint(1, 80)
        taken += queues[key][:run]
        del queues[key][:run]
        if not queues[key]:
            del queues[key]
    return taken
