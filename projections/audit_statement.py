"""``bitex statement``: one ledger account's entries between two times, as CSV, reconciled.

The entries are replayed from the log, the source of truth, not read from
MySQL: each account event is applied through the domain (``AccountSide``,
every check included) and its posting (``domain.ledger.postings``) gives the
legs; the statement keeps those of the one ledger account asked for. That is
a user account (its id: only its own partition of the user-events topic is
read) or a system one (``fees``, ``external``, ``clearing:<symbol>``: every
partition).

Time is cut per aggregate, as replays cut it: an account's history before
``--from`` is its events up to its first stamped at or after ``--from``, and
the statement runs to its first event stamped at or after ``--to``. So
opening plus entries is exactly closing for every asset and bucket, and for a
user account closing is exactly the balances its aggregate holds at that
point, which the statement checks.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TextIO
from uuid import UUID

from domain.accounts import Account
from domain.ledger import AVAILABLE, LOCKED, Leg
from domain.markets import Market, assets_of
from infra.formats import moment_text
from infra.settings import Settings
from infra.topics import TopicMap
from projections.audit_read import EventReader
from projections.audit_replay import AccountSide, Cut, Violation, collector_paused, plan
from projections.mysql_projection import ledger_reference

Bucket = tuple[str, str]
"""(asset, bucket)."""


@dataclass(frozen=True, slots=True)
class Entry:
    at: datetime
    kind: str
    aggregate_id: UUID
    version: int
    reference: str
    asset: str
    bucket: str
    units: int


@dataclass
class Statement:
    account: str
    start: datetime | None
    end: datetime | None
    opening: defaultdict[Bucket, int] = field(default_factory=lambda: defaultdict(int))
    entries: list[Entry] = field(default_factory=list)
    held: dict[Bucket, int] | None = None
    """A user account's balances as its replayed aggregate holds them at the end."""
    violations: list[Violation] = field(default_factory=list)

    @property
    def closing(self) -> dict[Bucket, int]:
        closing = defaultdict(int, self.opening)
        for entry in self.entries:
            closing[entry.asset, entry.bucket] += entry.units
        return dict(closing)

    def mismatches(self) -> list[str]:
        """Where closing is not what the account holds (empty: the statement reconciles)."""
        if self.held is None:
            return []
        closing = self.closing
        return [
            f"{asset} {bucket}: opening plus entries gives {closing.get((asset, bucket), 0)}, "
            f"the account holds {self.held.get((asset, bucket), 0)} (minor units)"
            for asset, bucket in sorted(set(closing) | set(self.held))
            if closing.get((asset, bucket), 0) != self.held.get((asset, bucket), 0)
        ]


class StatementSide(AccountSide):
    """An account side that keeps the legs of one ledger account (see the module docstring)."""

    def __init__(
        self,
        markets: dict[str, Market],
        name: str,
        start: datetime | None,
        end: datetime | None,
    ) -> None:
        until = None if end is None else end - timedelta(microseconds=1)
        super().__init__(markets, until, compare=False, trades=None)
        self.statement = Statement(name, start, end)
        self._started: set[UUID] = set()

    def posted(self, event: Account.Event, legs: Sequence[Leg]) -> None:
        name = self.statement.account
        mine = [(index, leg) for index, leg in enumerate(legs) if leg.ledger_account == name]
        if not mine:
            return
        me, start = event.originator_id, self.statement.start
        before = start is not None and me not in self._started and event.timestamp < start
        if not before:
            self._started.add(me)
        for _, leg in mine:
            if not leg.units:
                continue
            if before:
                self.statement.opening[leg.asset, leg.bucket] += leg.units
            else:
                self.statement.entries.append(
                    Entry(
                        event.timestamp,
                        type(event).__name__,
                        me,
                        event.originator_version,
                        ledger_reference(event),
                        leg.asset,
                        leg.bucket,
                        leg.units,
                    )
                )


async def statement(
    settings: Settings,
    topics: TopicMap,
    markets: dict[str, Market],
    account: str,
    start: datetime | None,
    end: datetime | None,
) -> Statement:
    """The statement of ``account`` (an account id, or a system ledger account's name)."""
    try:
        account_id: UUID | None = UUID(account)
    except ValueError:
        account_id = None
    name = str(account_id) if account_id is not None else account
    side = StatementSide(markets, name, start, end)
    spans = await plan(settings, [topics.user_events], Cut())
    if account_id is not None:
        side.only = name.encode()
        mine = topics.account_partition(account_id)
        spans = [span for span in spans if span[0][1] == mine]
    with collector_paused():
        async with EventReader(settings) as reader:
            for (topic, partition), first, last in spans:
                async for records in reader.batches(topic, partition, first, last):
                    side.feed(topic, partition, records)
    result = side.statement
    result.violations = side.violations
    result.entries.sort(key=lambda entry: (entry.at, str(entry.aggregate_id), entry.version))
    if account_id is not None:
        held = side.replayer.accounts.get(account_id)
        result.held = {}
        if held is not None:
            for asset, holding in held.holdings.items():
                result.held[asset, AVAILABLE] = holding.available
                result.held[asset, LOCKED] = holding.locked
        result.held = {key: units for key, units in result.held.items() if units}
    return result


def write_csv(found: Statement, markets: dict[str, Market], out: TextIO) -> None:
    """Opening rows, one row per entry with the running balance, closing rows."""
    assets = assets_of(markets)

    def amount(asset: str, units: int) -> str:
        known = assets.get(asset)
        return str(known.to_decimal(units)) if known else str(units)

    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        [
            "row",
            "at",
            "account",
            "event",
            "event_account",
            "version",
            "reference",
            "asset",
            "bucket",
            "amount",
            "balance",
        ]
    )
    start = "" if found.start is None else moment_text(found.start)
    end = "" if found.end is None else moment_text(found.end)
    buckets = sorted(set(found.opening) | set(found.closing))
    blank = ["", "", "", ""]
    for asset, bucket in buckets:
        units = found.opening.get((asset, bucket), 0)
        writer.writerow(
            ["opening", start, found.account, *blank, asset, bucket, "", amount(asset, units)]
        )
    running = defaultdict(int, found.opening)
    for entry in found.entries:
        key = (entry.asset, entry.bucket)
        running[key] += entry.units
        writer.writerow(
            [
                "entry",
                moment_text(entry.at),
                found.account,
                entry.kind,
                str(entry.aggregate_id),
                entry.version,
                entry.reference,
                entry.asset,
                entry.bucket,
                amount(entry.asset, entry.units),
                amount(entry.asset, running[key]),
            ]
        )
    closing = found.closing
    for asset, bucket in buckets:
        units = closing.get((asset, bucket), 0)
        writer.writerow(
            ["closing", end, found.account, *blank, asset, bucket, "", amount(asset, units)]
        )
