"""The one way BitEx configures a Faust app: raw bytes, topics it never declares."""

from __future__ import annotations

from typing import Any

import faust

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
