"""The topic map: every topic BitEx uses, its partitions, its keys and its settings.

Event topics (the article's user, order and market events) are the source of
truth: they never expire and are never compacted. Command topics carry work
between the gateways and the processors and may expire.

Two partitionings:

- by account: ``bitex.account-commands`` and ``bitex.user-events`` share one
  partition count and one key hash, so the account processor that owns
  partition *p* of its inbox owns partition *p* of the account events;
- by market, through an explicit market -> partition map, so that a hot market
  can own a partition: ``bitex.matching-commands``, ``bitex.order-events`` and
  ``bitex.market-events``.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from types import MappingProxyType
from uuid import UUID

from aiokafka.partitioner import murmur2

from infra.kafka_admin import TopicSpec, event_topic

ACCOUNT_PARTITIONS = 4
MARKET_PARTITIONS = 2

USER_EVENTS = "bitex.user-events"
ORDER_EVENTS = "bitex.order-events"
MARKET_EVENTS = "bitex.market-events"
ACCOUNT_COMMANDS = "bitex.account-commands"
MATCHING_COMMANDS = "bitex.matching-commands"
OUTCOMES = "bitex.outcomes"
ACCOUNT_SNAPSHOTS = "bitex.account-snapshots"
MATCHING_SNAPSHOTS = "bitex.matching-snapshots"


SNAPSHOT_MAX_BYTES = 64 * 1024 * 1024
SNAPSHOT_CONFIG: Mapping[str, str] = MappingProxyType(
    {"cleanup.policy": "compact", "max.message.bytes": str(SNAPSHOT_MAX_BYTES)}
)
WEEK_MS = str(7 * 24 * 3600 * 1000)
DAY_MS = str(24 * 3600 * 1000)

DEFAULT_MARKET_MAP: Mapping[str, int] = MappingProxyType(
    {"BTC-USDT": 0, "ETH-USDT": 1, "ETH-BTC": 1}
)


def _market_map_from_env() -> dict[str, int]:
    """``BITEX_MARKET_PARTITIONS=BTC-USDT=0,ETH-USDT=1`` overrides the default map."""
    raw = os.environ.get("BITEX_MARKET_PARTITIONS", "")
    if not raw.strip():
        return dict(DEFAULT_MARKET_MAP)
    pairs = (item.split("=", 1) for item in raw.split(",") if item.strip())
    return {symbol.strip(): int(partition) for symbol, partition in pairs}


@lru_cache(maxsize=1 << 16)
def _murmur2_partition(account_id: UUID, partitions: int) -> int:
    hashed: int = murmur2(str(account_id).encode())
    return (hashed & 0x7FFFFFFF) % partitions


@dataclass(frozen=True)
class TopicMap:
    account_partitions: int = ACCOUNT_PARTITIONS
    market_partitions: int = MARKET_PARTITIONS
    market_map: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_MARKET_MAP))

    prefix: str = ""
    """Prepended to every topic (and consumer group) name, to run isolated copies."""

    @classmethod
    def from_env(cls) -> TopicMap:
        return cls(
            market_map=_market_map_from_env(), prefix=os.environ.get("BITEX_TOPIC_PREFIX", "")
        )

    @property
    def user_events(self) -> str:
        return self.prefix + USER_EVENTS

    @property
    def order_events(self) -> str:
        return self.prefix + ORDER_EVENTS

    @property
    def market_events(self) -> str:
        return self.prefix + MARKET_EVENTS

    @property
    def account_commands(self) -> str:
        return self.prefix + ACCOUNT_COMMANDS

    @property
    def matching_commands(self) -> str:
        return self.prefix + MATCHING_COMMANDS

    @property
    def outcomes(self) -> str:
        return self.prefix + OUTCOMES

    @property
    def account_snapshots(self) -> str:
        return self.prefix + ACCOUNT_SNAPSHOTS

    @property
    def matching_snapshots(self) -> str:
        return self.prefix + MATCHING_SNAPSHOTS

    @property
    def event_topics(self) -> tuple[str, str, str]:
        return (self.user_events, self.order_events, self.market_events)

    def partitions(self, topic: str) -> int:
        if topic in (self.user_events, self.account_commands, self.account_snapshots):
            return self.account_partitions
        if topic == self.outcomes:
            return 1
        return self.market_partitions

    def account_partition(self, account_id: UUID) -> int:
        """Kafka's own key hash (murmur2), so any client keyed by account agrees."""
        return _murmur2_partition(account_id, self.account_partitions)

    def market_partition(self, symbol: str) -> int:
        """The mapped partition; an unmapped market hashes to one."""
        partition = self.market_map.get(symbol)
        if partition is None:
            partition = zlib.crc32(symbol.encode()) % self.market_partitions
        return partition

    def specs(self) -> list[TopicSpec]:
        accounts, markets = self.account_partitions, self.market_partitions
        return [
            event_topic(self.user_events, accounts),
            event_topic(self.order_events, markets),
            event_topic(self.market_events, markets),
            TopicSpec(self.account_commands, accounts, {"retention.ms": WEEK_MS}),
            TopicSpec(self.matching_commands, markets, {"retention.ms": WEEK_MS}),
            TopicSpec(self.outcomes, 1, {"retention.ms": DAY_MS}),
            TopicSpec(self.account_snapshots, accounts, SNAPSHOT_CONFIG),
            TopicSpec(self.matching_snapshots, markets, SNAPSHOT_CONFIG),
        ]
