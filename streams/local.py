"""The processors wired together in memory: the same cores, an in-memory log.

Tests use it to compare the distributed design with the in-process Exchange,
to crash and recover cores at will, and to compute the reference state of a
run from the inbox logs Kafka recorded.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from itertools import chain

from domain.accounts import Account
from domain.markets import Market
from domain.venue import Venue
from infra.event_records import cause_offset, stored_event
from infra.messages import Command
from infra.topics import TopicMap
from streams.account_processor import AccountProcessor
from streams.matching_processor import MatchingProcessor
from streams.records import InRecord, OutRecord
from streams.snapshots import Snapshot


class LocalCluster:
    def __init__(self, markets: dict[str, Market], topics: TopicMap | None = None) -> None:
        self.markets = markets
        self.topics = topics = topics or TopicMap()
        self.own_logs = {
            topics.account_commands: (topics.user_events,),
            topics.matching_commands: (topics.market_events, topics.order_events),
        }
        self.logs: defaultdict[tuple[str, int], list[OutRecord]] = defaultdict(list)
        self.consumed: defaultdict[tuple[str, int], int] = defaultdict(int)
        self.cores: dict[tuple[str, int], AccountProcessor | MatchingProcessor] = {}
        self.snapshots: dict[tuple[str, int], Snapshot] = {}
        for inbox in self.own_logs:
            for partition in range(self.topics.partitions(inbox)):
                self.cores[inbox, partition] = self._new_core(inbox, partition)

    # -- feeding -----------------------------------------------------------

    def send(self, command: Command) -> None:
        partition = self.topics.account_partition(command.account_id)
        key = str(command.account_id).encode()
        inbox = self.topics.account_commands
        self.logs[inbox, partition].append(OutRecord(inbox, partition, key, command.encode()))

    def step(
        self,
        inbox: str,
        partition: int,
        route: bool = True,
        sink: list[OutRecord] | None = None,
    ) -> bool:
        """Let one core take its next input; False if it had none.

        With ``route`` False its outputs are not appended to the logs, so the
        inboxes hold only what was put there (to replay a recorded run); they
        go to ``sink`` if one is given.
        """
        log = self.logs[inbox, partition]
        offset = self.consumed[inbox, partition]
        if offset >= len(log):
            return False
        record = log[offset]
        out = self.cores[inbox, partition].handle(
            InRecord(partition, offset, record.value, record.headers)
        )
        self.consumed[inbox, partition] = offset + 1
        if sink is not None:
            sink.extend(out)
        for produced in out if route else ():
            self.logs[produced.topic, produced.partition].append(produced)
        return True

    def run_until_quiet(self) -> None:
        busy = True
        while busy:
            busy = False
            for inbox, partition in list(self.cores):
                while self.step(inbox, partition):
                    busy = True

    # -- crashes -------------------------------------------------------------

    def snapshot(self, inbox: str, partition: int) -> None:
        """Snapshot a core as the runtime does (through its bytes, to prove the round trip)."""
        snapshot = Snapshot(
            self.consumed[inbox, partition],
            {topic: len(self.logs[topic, partition]) for topic in self.own_logs[inbox]},
            self.cores[inbox, partition].snapshot(),
        )
        self.snapshots[inbox, partition] = Snapshot.decode(snapshot.encode())

    def crash(self, inbox: str, partition: int, resume_at: int) -> None:
        """Lose a core's memory; it rebuilds (from its latest snapshot and its own log)
        and resumes at ``resume_at``, or at its snapshot if that is later.

        ``resume_at`` may lag what it had consumed, as a committed offset does.
        """
        assert resume_at <= self.consumed[inbox, partition]
        core = self._new_core(inbox, partition)
        snapshot = self.snapshots.get((inbox, partition))
        start = snapshot.input_offset if snapshot else 0
        resume = max(resume_at, start)
        if snapshot is not None:
            core.load(snapshot.state)
        for offset in range(start, resume):
            record = self.logs[inbox, partition][offset]
            core.note_processed(InRecord(partition, offset, record.value, record.headers))
        for topic in self.own_logs[inbox]:
            begin = snapshot.outputs[topic] if snapshot else 0
            for record in self.logs[topic, partition][begin:]:
                cause = cause_offset(record.headers)
                stored = stored_event(record.value, record.headers)
                if stored is not None and cause is not None and start <= cause[1] < resume:
                    core.restore(stored, record.headers)
        self.cores[inbox, partition] = core
        self.consumed[inbox, partition] = resume

    # -- reading -------------------------------------------------------------

    def accounts(self) -> list[Account]:
        return list(
            chain.from_iterable(
                core.accounts.values()
                for core in self.cores.values()
                if isinstance(core, AccountProcessor)
            )
        )

    def venues(self) -> list[Venue]:
        return list(
            chain.from_iterable(
                core.venues.values()
                for core in self.cores.values()
                if isinstance(core, MatchingProcessor)
            )
        )

    def event_log(self, topic: str) -> Iterable[OutRecord]:
        for partition in range(self.topics.partitions(topic)):
            yield from self.logs[topic, partition]

    # -- helpers -------------------------------------------------------------

    def _new_core(self, inbox: str, partition: int) -> AccountProcessor | MatchingProcessor:
        if inbox == self.topics.account_commands:
            return AccountProcessor(self.markets, self.topics, partition)
        return MatchingProcessor(self.markets, self.topics, partition)
