"""Redis is real: pub/sub round trip (how notifications reach the WebSocket gateway)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

pytestmark = pytest.mark.integration


async def test_pubsub_round_trip(
    redis_client: aioredis.Redis, unique: Callable[[str], str]
) -> None:
    channel = unique("notifications")
    pubsub = redis_client.pubsub()
    await pubsub.subscribe(channel)
    try:
        confirmation = await pubsub.get_message(timeout=5)
        assert confirmation is not None
        assert confirmation["type"] == "subscribe"

        payloads = [b'{"seq": 1}', b'{"seq": 2}', "ünïcode ✓".encode()]
        for payload in payloads:
            assert await redis_client.publish(channel, payload) == 1  # one subscriber: us

        received: list[dict[str, Any]] = []
        deadline = time.monotonic() + 10
        while len(received) < len(payloads) and time.monotonic() < deadline:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
            if message is not None:
                received.append(message)
        assert [m["data"] for m in received] == payloads
        assert {m["channel"] for m in received} == {channel.encode()}
    finally:
        await pubsub.unsubscribe(channel)
        await pubsub.aclose()  # type: ignore[no-untyped-call]

    # Nobody listens any more: a publish reaches no one.
    assert await redis_client.publish(channel, b"late") == 0
