"""The project's topic-admin code creates topics the way the broker keeps them."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from infra.kafka_admin import (
    EVENT_TOPIC_CONFIG,
    TopicMismatch,
    TopicSpec,
    describe_topic_config,
    ensure_topics,
    event_topic,
    topic_partitions,
)
from infra.settings import Settings

pytestmark = pytest.mark.integration


async def test_event_topic_never_expires(
    settings: Settings, unique: Callable[[str], str], topics: list[str]
) -> None:
    name = unique("events")
    topics.append(name)
    spec = event_topic(name, partitions=3)
    assert dict(spec.config) == {"retention.ms": "-1", "cleanup.policy": "delete"}

    assert await ensure_topics([spec], settings) == [name]
    assert await ensure_topics([spec], settings) == []  # idempotent

    config = await describe_topic_config(name, settings)
    assert config["retention.ms"] == "-1"
    assert config["cleanup.policy"] == "delete"
    assert await topic_partitions(name, settings) == 3


async def test_ensure_topics_repairs_config_but_not_partitions(
    settings: Settings, unique: Callable[[str], str], topics: list[str]
) -> None:
    name = unique("drift")
    topics.append(name)
    await ensure_topics([TopicSpec(name, 2, {"retention.ms": "60000"})], settings)
    assert (await describe_topic_config(name, settings))["retention.ms"] == "60000"

    # The spec now says "event topic": the existing topic's config is brought in line.
    assert await ensure_topics([TopicSpec(name, 2, EVENT_TOPIC_CONFIG)], settings) == []
    assert (await describe_topic_config(name, settings))["retention.ms"] == "-1"

    # A different partition count would re-key the data: refused, topic untouched.
    with pytest.raises(TopicMismatch, match="2 partitions"):
        await ensure_topics([TopicSpec(name, 4, EVENT_TOPIC_CONFIG)], settings)
    assert await topic_partitions(name, settings) == 2
