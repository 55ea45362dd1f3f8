"""The project's own Kafka topic administration.

Auto-creation is off on the broker: every topic BitEx uses is declared as a
``TopicSpec`` and created by ``ensure_topics`` with explicit partitions and settings.
Event topics are the source of truth, so they never expire and are never compacted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import for_code

from infra.settings import Settings

TOPIC_ALREADY_EXISTS = 36

#: Settings for every event topic: keep every record forever, never compact.
EVENT_TOPIC_CONFIG: Mapping[str, str] = {"retention.ms": "-1", "cleanup.policy": "delete"}


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: Mapping[str, str] = field(default_factory=dict)
    replication_factor: int = 1


def event_topic(name: str, partitions: int, **extra: str) -> TopicSpec:
    """A TopicSpec with the event-topic settings (plus any extra ones)."""
    return TopicSpec(name, partitions, {**EVENT_TOPIC_CONFIG, **extra})


class TopicMismatch(Exception):
    """An existing topic differs from its spec in a way BitEx must not change itself."""


class KafkaAdminError(Exception):
    """The broker refused an admin request."""


def _raise_for(code: int, message: str | None, what: str) -> None:
    if code:
        error = for_code(code)
        raise KafkaAdminError(f"{what}: {error.__name__} ({message or error.description})")


@asynccontextmanager
async def admin_client(settings: Settings | None = None) -> AsyncIterator[AIOKafkaAdminClient]:
    settings = settings or Settings.from_env()
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, client_id="bitex-admin")
    await admin.start()
    try:
        yield admin
    finally:
        await admin.close()


async def _partition_counts(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, int]:
    """Partitions of each existing topic among names (missing topics are left out)."""
    topics: list[dict[str, Any]] = await admin.describe_topics(names)
    return {
        str(t["topic"]): len(t["partitions"])
        for t in topics
        if t["error_code"] == 0 and t["partitions"]
    }


async def _configs(admin: AIOKafkaAdminClient, name: str) -> dict[str, str]:
    responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)])
    resource: dict[str, Any] = responses[0].to_object()["resources"][0]
    _raise_for(resource["error_code"], resource["error_message"], f"describe configs of {name}")
    return {
        str(entry.get("config_names", entry.get("config_name"))): str(entry["config_value"])
        for entry in resource["config_entries"]
        if entry["config_value"] is not None
    }


async def ensure_topics(
    specs: Iterable[TopicSpec], settings: Settings | None = None, timeout: float = 30.0
) -> list[str]:
    """Create the missing topics; bring the config of existing ones in line with the spec.

    Idempotent. Returns the names of the topics it created. Raises TopicMismatch if an
    existing topic has another partition count (changing it would re-key the data).
    Returns only once every topic has a leader for each partition.
    """
    wanted = {spec.name: spec for spec in specs}
    if not wanted:
        return []
    async with admin_client(settings) as admin:
        existing = set(await admin.list_topics())
        missing = [spec for name, spec in wanted.items() if name not in existing]
        created: list[str] = []
        if missing:
            response = await admin.create_topics(
                [
                    NewTopic(
                        s.name, s.partitions, s.replication_factor, topic_configs=dict(s.config)
                    )
                    for s in missing
                ]
            )
            for result in response.to_object()["topic_errors"]:
                if result["error_code"] == TOPIC_ALREADY_EXISTS:  # created concurrently
                    continue
                _raise_for(result["error_code"], result.get("error_message"), result["topic"])
                created.append(str(result["topic"]))

        for name in sorted(existing & wanted.keys()):
            spec = wanted[name]
            counts = await _partition_counts(admin, [name])
            if counts.get(name) != spec.partitions:
                raise TopicMismatch(
                    f"topic {name} has {counts.get(name)} partitions, its spec says "
                    f"{spec.partitions}; change one of them deliberately"
                )
            current = await _configs(admin, name)
            if any(current.get(k) != v for k, v in spec.config.items()):
                alter = ConfigResource(ConfigResourceType.TOPIC, name, dict(spec.config))
                (response,) = await admin.alter_configs([alter])
                for result in response.to_object()["resources"]:
                    _raise_for(result["error_code"], result["error_message"], f"alter {name}")

        # Wait until the new topics are visible with a leader for every partition.
        deadline = time.monotonic() + timeout
        while created:
            topics: list[dict[str, Any]] = await admin.describe_topics(created)
            ready = all(
                t["error_code"] == 0
                and len(t["partitions"]) == wanted[t["topic"]].partitions
                and all(p["leader"] >= 0 for p in t["partitions"])
                for t in topics
            )
            if ready:
                break
            if time.monotonic() > deadline:
                raise KafkaAdminError(f"topics {created} have no leader after {timeout:.0f} s")
            await asyncio.sleep(0.1)
        return created


async def describe_topic_config(name: str, settings: Settings | None = None) -> dict[str, str]:
    """The topic's effective configuration as the broker reports it."""
    async with admin_client(settings) as admin:
        return await _configs(admin, name)


async def topic_partitions(name: str, settings: Settings | None = None) -> int:
    """How many partitions the topic has (0 if it does not exist)."""
    async with admin_client(settings) as admin:
        return (await _partition_counts(admin, [name])).get(name, 0)


async def delete_topics(names: Iterable[str], settings: Settings | None = None) -> None:
    """Delete topics (for tests and tools; event topics are never deleted in operation)."""
    names = list(names)
    if names:
        async with admin_client(settings) as admin:
            await admin.delete_topics(names)
