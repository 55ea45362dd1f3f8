"""The gateways' way to the write side: stamp a command, publish it, await its outcome.

Commands go to the account inbox partition of their account, carrying the
current trace context in their headers; processors answer on the outcomes
topic, which every client reads from its end.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from infra.messages import Command, Outcome
from infra.settings import Settings
from infra.topics import TopicMap
from infra.tracing import trace_headers

_UUID4_CLEARED = ~(0xF000 << 64 | 0xC000 << 48)
_UUID4_SET = 0x4000 << 64 | 0x8000 << 48


def new_command_id() -> str:
    """A random command id: ``uuid4().hex``, without building the ``UUID`` (half the
    cost, and every order makes one)."""
    return format(int.from_bytes(os.urandom(16)) & _UUID4_CLEARED | _UUID4_SET, "032x")


class CommandClient:
    def __init__(self, settings: Settings | None = None, topics: TopicMap | None = None) -> None:
        self.settings = settings or Settings.from_env()
        self.topics = topics or TopicMap.from_env()
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._reader: asyncio.Task[None] | None = None
        self._waiting: dict[str, asyncio.Future[Outcome]] = {}

    async def start(self) -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            client_id="bitex-command-client",
            enable_idempotence=True,
            acks="all",
            linger_ms=1,
        )
        await self._producer.start()
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            enable_auto_commit=False,
            client_id="bitex-outcome-reader",
        )
        await self._consumer.start()
        outcomes = TopicPartition(self.topics.outcomes, 0)
        self._consumer.assign([outcomes])
        await self._consumer.seek_to_end(outcomes)
        await self._consumer.position(outcomes)
        self._reader = asyncio.create_task(self._read_outcomes())

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        for client in (self._consumer, self._producer):
            if client is not None:
                await client.stop()

    async def ping(self) -> None:
        """Ask the brokers for their metadata: raises unless Kafka answers."""
        assert self._producer is not None, "start() the client first"
        await self._producer.client.fetch_all_metadata()

    async def __aenter__(self) -> CommandClient:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    @staticmethod
    def stamp(
        kind: str, account_id: UUID, fields: dict[str, Any], command_id: str | None = None
    ) -> Command:
        """A command with its identity and time: the only clock reading on the write path."""
        return Command(
            kind=kind,
            command_id=command_id or new_command_id(),
            at=datetime.now(UTC),
            account_id=account_id,
            fields=fields,
        )

    async def publish(self, command: Command) -> None:
        """Publish without waiting for the outcome (acknowledged by Kafka, acks=all)."""
        assert self._producer is not None, "start() the client first"
        partition = self.topics.account_partition(command.account_id)
        await self._producer.send_and_wait(
            self.topics.account_commands,
            command.encode(),
            key=str(command.account_id).encode(),
            partition=partition,
            headers=trace_headers(),
        )

    async def send_many(self, commands: list[Command]) -> None:
        """Publish a batch, in order per account, waiting once for all of it."""
        assert self._producer is not None, "start() the client first"
        futures = []
        headers = trace_headers()
        for command in commands:
            futures.append(
                await self._producer.send(
                    self.topics.account_commands,
                    command.encode(),
                    key=str(command.account_id).encode(),
                    partition=self.topics.account_partition(command.account_id),
                    headers=headers,
                )
            )
        await asyncio.gather(*futures)

    async def execute(self, command: Command, timeout: float = 5.0) -> Outcome | None:
        """Publish and wait for the outcome; None if it did not come within ``timeout``."""
        waiter = self.expect(command.command_id)
        await self.publish(command)
        try:
            return await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            return None
        finally:
            self._waiting.pop(command.command_id, None)

    def expect(self, command_id: str) -> asyncio.Future[Outcome]:
        """A future for a command's outcome (register before publishing)."""
        future = self._waiting.get(command_id)
        if future is None:
            future = self._waiting[command_id] = asyncio.get_running_loop().create_future()
        return future

    async def _read_outcomes(self) -> None:
        assert self._consumer is not None
        while True:
            batches = await self._consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for record in records:
                    if record.value is None:
                        continue
                    outcome = Outcome.decode(record.value)
                    future = self._waiting.get(outcome.command_id)
                    if future is not None and not future.done():
                        future.set_result(outcome)
