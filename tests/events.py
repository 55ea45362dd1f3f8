"""Event records made by the real processor cores in memory, for projection tests.

``event_log`` runs commands through ``LocalCluster`` (the same cores the
workers run) and returns what they wrote to the event topics, decoded as the
projections receive it, each with the partition and offset it would have on
Kafka. The cluster comes back too, for the domain state to compare with.
"""

from __future__ import annotations

from collections.abc import Iterable

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
