"""The one way BitEx configures a Faust app (raw bytes, topics it never declares), and
the one way its agents take their input (``batches``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, cast

import faust
from faust.streams import Stream
from faust.types import ChannelT, EventT
from mode.utils.aiter import aiter
from mode.utils.locks import Event

from infra.settings import Settings


def faust_app(
    group: str, settings: Settings, batch_size: int, instance: int = 0, **options: Any
) -> faust.App:
    """An app consuming as consumer group ``group``, ``batch_size`` records a poll.

    Topics are created by ``bitex topics`` (never by Faust), values and keys stay
    bytes, and membership is static: a restarted worker takes its place back at once.
    Faust's (empty) table directory goes under the state directory, not the cwd.
    """
    tables = settings.state_dir / "faust"
    tables.mkdir(parents=True, exist_ok=True)
    return faust.App(
        group,
        broker=f"kafka://{settings.kafka_bootstrap}",
        value_serializer="raw",
        key_serializer="raw",
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        topic_allow_declare=False,
        topic_disable_leader=True,
        stream_buffer_maxsize=4 * batch_size,
        consumer_group_instance_id=f"{group}-{instance}",
        broker_max_poll_records=batch_size,
        datadir=str(tables / "{conf.name}-data"),
        **options,
    )


async def batches(
    stream: Stream[Any], size: int, within: float
) -> AsyncIterator[list[EventT[Any]]]:
    """Events in batches of at most ``size``, each flushed ``within`` seconds after its
    first event arrived; acknowledged once the consumer of the batch asks for the next.

    Faust's own ``take_events`` wakes every ``within`` seconds even when nothing
    came, which keeps an idle worker at a tenth of a core for a 1 ms window.
    This is the same buffering (the same processor hook, passive consumption
    and acks after use) with one change: an empty buffer waits for its first
    event, however long that takes, and only then for the window.
    """
    buffered: list[EventT[Any]] = []
    arrived, full, consumed = Event(), Event(), Event()
    consuming: asyncio.Future[None] | None = None
    acks_were = stream.enable_acks

    async def buffer(value: Any) -> Any:
        nonlocal consuming
        if consuming is not None:
            try:
                await consuming
            finally:
                consuming = None
        event = stream.current_event
        if event is None:
            raise RuntimeError("a buffered value has no current event")
        buffered.append(event)
        arrived.set()
        if len(buffered) >= size:
            full.set()
            consumed.clear()
            await stream.wait(consumed)
        return value

    stream.enable_acks = False  # acknowledged below, once the batch has been used
    stream.add_processor(buffer)
    stream._enable_passive(cast(ChannelT[Any], aiter(stream.channel)))
    try:
        while not stream.should_stop:
            # (mode reports a timeout as "stopped": whether it is, ``should_stop`` says.)
            await stream.wait(arrived)
            await stream.wait(full, timeout=within)
            if stream.should_stop or not buffered:
                continue
            consuming = asyncio.get_running_loop().create_future()
            try:
                yield list(buffered)
            finally:
                for event in buffered:
                    await stream.ack(event)
                buffered.clear()
                arrived.clear()
                full.clear()
                if not consuming.done():
                    consuming.set_result(None)
                consumed.set()
    finally:
        stream.enable_acks = acks_were
        stream._processors.remove(buffer)
