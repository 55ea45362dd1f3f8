"""The replay tool (``bitex replay``): rebuild every aggregate from the log, check every
rule, compare the live read models, report.

1. Rebuild (``projections.audit_replay``): every event topic from offset 0,
   read-committed, up to the cut (``--until`` a time, ``--until-offset``
   offsets), decoded by the Mapper and applied by the domain's Replayer, each
   event checked as it is applied (identity, double entry, balances,
   reservations, settlements).
2. Conclude: the checks of the whole final state, once. The market side
   checks every order's final status against its fills and the book, and the
   books (``MarketSide.finish``, while the account side may still be running);
   then ``conclude`` runs ``domain.invariants`` (balances, open orders' needs,
   the ledger against every account and its clearing accounts back at zero)
   and checks every trade has one maker and one taker fill and settlement.
3. Compare (``projections.audit_compare``): MySQL balances, orders, fills and
   ledger; Redis books and tickers. Only for the whole log: the read models
   are at its end, not at a cut. Each projection is first given a little time
   to catch up with the end the replay read to; one still behind, or already
   past it (events kept coming: audit a quiet system), is itself a difference.
4. Report: the state hash (``domain.state_hash``), a JSON report; ``ok`` only
   when nothing is wrong.
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, TextIO
from uuid import UUID

import orjson

from domain.audit_checks import BOTH_SIDES, TRADE, check_trade_sides
from domain.invariants import check_balances, check_ledger, check_reservations
from domain.markets import Market
from domain.state_hash import accounts_part, hash_parts
from infra.settings import Settings
from infra.topics import TopicMap
from projections.audit_read import Position
from projections.audit_replay import Cut, EventPlace, Replay, Violation, replay

if TYPE_CHECKING:  # the comparison's modules (SQLAlchemy, redis) load only to compare
    from projections.audit_compare import Difference

CATCH_UP_SECONDS = 30.0
"""How long the comparison waits for the projections to reach the end the replay read."""
SHOWN = 50
"""Violations and differences printed (the JSON report has all of them)."""

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass(repr=False)
class AuditReport:
    """What ``audit`` found. Its ``repr`` is short: ``asyncio.run`` (3.11) writes the repr
    of its finished task, result included, when it restores the SIGINT handler, and
    the whole replayed state took about a second to write."""

    ok: bool
    state_hash: str
    replay: Replay
    violations: list[Violation]
    differences: list[Difference]
    compared: list[str] = field(default_factory=list)
    """What was compared (empty: nothing)."""
    cut: Cut = field(default_factory=Cut)
    rebuilt: bool = False

    def __repr__(self) -> str:
        return f"AuditReport(ok={self.ok}, state_hash={self.state_hash!r})"

    @property
    def events_per_second(self) -> float:
        seconds = self.replay.seconds
        return self.replay.counts["events"] / seconds if seconds > 0 else 0.0

    def to_json(self) -> dict[str, object]:
        counts = self.replay.counts
        return {
            "ok": self.ok,
            "state_hash": self.state_hash,
            "cut": {
                "until": None if self.cut.until is None else self.cut.until.isoformat(),
                "until_offsets": _positions(self.cut.offsets),
            },
            "positions": _positions(self.replay.positions),
            "records": self.replay.records,
            "events": {
                "applied": counts["events"],
                "duplicates": counts["duplicates"],
                "forks": counts["forks"],
                "not_events": counts["not_events"],
                "after_cut": counts["after_cut"],
                "not_replayed_after_halt": counts["halted"],
                "skipped": dict(sorted(self.replay.skipped.items())),
            },
            "state": {
                "accounts": len(self.replay.replayer.accounts),
                "users": len(self.replay.replayer.users),
                "orders": sum(len(v.orders) for v in self.replay.replayer.venues.values()),
                "trades": len(self.replay.trades),
            },
            "seconds": round(self.replay.seconds, 3),
            "events_per_second": round(self.events_per_second),
            "violations": [violation.to_json() for violation in self.violations],
            "read_models": {
                "compared": self.compared,
                "rebuilt": self.rebuilt,
                "differences": [difference.to_json() for difference in self.differences],
            },
        }


def _positions(positions: Mapping[Position, int]) -> dict[str, int]:
    """``{"topic:partition": offset}``, the form ``--until-offset`` takes back."""
    return {
        f"{topic}:{partition}": offset for (topic, partition), offset in sorted(positions.items())
    }


# -- the checks of the whole state --------------------------------------------------


def conclude(replayed: Replay) -> list[Violation]:
    """The checks that need the whole state (see the module docstring), once."""
    replayer = replayed.replayer
    accounts = list(replayer.accounts.values())
    venues = list(replayer.venues.values())
    found: list[Violation] = []

    def named(check: str, problems: Iterable[str]) -> None:
        for problem in problems:
            found.append(Violation(check, f"at the end: {problem}", _places(problem, replayed)))

    named("balances", check_balances(accounts))
    named("locked_funds", check_reservations(accounts, venues))
    named("ledger", check_ledger(replayed.ledger, accounts, settled=True))

    filled, settled, trades = replayed.filled, replayed.settled, replayed.trades
    if filled.keys() == settled.keys() == trades.keys() and (
        set(filled.values()) | set(settled.values()) <= {BOTH_SIDES}
    ):  # every trade filled and settled on both sides, checked in C (the usual case)
        return found
    for trade_id, trade in trades.items():
        fills, settlements = filled.get(trade_id, 0), settled.get(trade_id, 0)
        if fills == settlements == BOTH_SIDES:  # all is well: nothing to say (the usual case)
            continue
        problems = check_trade_sides(trade, fills, settlements)
        if problems:
            executed = EventPlace(str(trade.tape_id), trade.version, "bitex.market.TradeExecuted")
            message = f"trade {trade_id}: " + "; ".join(problems)
            found.append(Violation(TRADE, message, (executed,)))

    return found


def _places(problem: str, replayed: Replay) -> tuple[EventPlace, ...]:
    """The aggregates a whole-state finding names, each at its last version."""
    replayer = replayed.replayer
    places = []
    for text in dict.fromkeys(_UUID.findall(problem)):
        aggregate_id = UUID(text)
        account = replayer.accounts.get(aggregate_id)
        if account is not None:
            places.append(EventPlace(text, account.version, "bitex.account"))
            continue
        for venue in replayer.venues.values():
            order = venue.orders.get(aggregate_id)
            if order is not None:
                places.append(EventPlace(text, order.version, "bitex.order"))
                break
    return tuple(places)


# -- the whole audit ----------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    cut: Cut = field(default_factory=Cut)
    compare: bool = True
    rebuild: bool = False
    processes: int | None = None
    """1 or 2; None: chosen by the size of the log (``audit_replay.replay``)."""


async def audit(
    settings: Settings,
    topics: TopicMap,
    markets: dict[str, Market],
    options: Options,
    progress: Callable[[int, int], None] | None = None,
    log: TextIO | None = None,
) -> AuditReport:
    """Replay, check, compare: the whole audit (see the module docstring).

    ``markets`` are those known before the log's first event; the replay learns
    the others from their listings on the log (``projections.audit_replay``).
    """
    rebuilt = False
    if options.rebuild:
        from projections.audit_rebuild import rebuild_read_models
        from projections.listings import read_listings

        markets = {**await read_listings(settings, topics), **markets}  # for the projections

        say(log, "rebuild: dropping the MySQL and Redis read models, projecting the log again")
        started = time.perf_counter()
        if isinstance(progress, ProgressLine):
            progress.restart("rebuild")
        projected = await rebuild_read_models(settings, topics, markets, progress)
        if isinstance(progress, ProgressLine):
            progress.restart("replay")
        say(
            log,
            f"rebuild: {projected:,} records projected in {time.perf_counter() - started:.1f} s",
        )
        rebuilt = True
    compare = options.compare and options.cut.is_whole_log
    replayed = await replay(
        settings, topics, markets, options.cut, compare, options.processes, progress
    )
    violations = replayed.violations + conclude(replayed)
    differences: list[Difference] = []
    compared: list[str] = []
    if compare:
        compared = [
            "mysql balances",
            "mysql orders",
            "mysql fills",
            "mysql ledger_entries",
            "redis books",
            "redis resting orders",
            "redis tickers",
        ]
        differences = await compare_read_models(settings, topics, replayed)
    digest = hash_parts(accounts_part(replayed.replayer.accounts.values()), replayed.venue_lines)
    return AuditReport(
        ok=not violations and not differences,
        state_hash=digest,
        replay=replayed,
        violations=violations,
        differences=differences,
        compared=compared,
        cut=options.cut,
        rebuilt=rebuilt,
    )


async def compare_read_models(
    settings: Settings, topics: TopicMap, replayed: Replay
) -> list[Difference]:
    """MySQL's and Redis's differences from the replayed state, once they have caught up."""
    from infra.mysql import create_engine
    from infra.redis import create_redis
    from infra.redis_keys import RedisKeys
    from projections.audit_compare import Difference, compare_mysql, compare_redis
    from projections.mysql_projection import NAME as MYSQL
    from projections.mysql_projection import load_positions
    from projections.redis_projection import RedisProjection

    assert replayed.digests is not None
    assert replayed.windows is not None
    keys = RedisKeys.for_prefix(topics.prefix)
    engine = create_engine(settings)
    redis = create_redis(settings)
    try:
        watched = RedisProjection(redis, keys, replayed.replayer.markets)
        wanted = {position: end for position, end in replayed.positions.items() if end}
        found: list[Difference] = []
        deadline = time.monotonic() + CATCH_UP_SECONDS
        while True:
            apart = []
            for name, stored in (
                (MYSQL, await asyncio.to_thread(load_positions, engine, MYSQL)),
                ("redis", await watched.positions()),
            ):
                apart += [
                    (name, position, stored.get(position, 0), end)
                    for position, end in sorted(wanted.items())
                    if stored.get(position, 0) != end
                ]
            behind = [item for item in apart if item[2] < item[3]]
            if not behind or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        for name, (topic, partition), reached, end in apart:
            why = "behind" if reached < end else "ahead: the log grew while it was replayed"
            found.append(
                Difference(
                    name, "projection_offsets", f"{topic}:{partition}", reached, f"{end} ({why})"
                )
            )
        found += await asyncio.to_thread(compare_mysql, engine, replayed.replayer, replayed.digests)
        found += await compare_redis(redis, keys, replayed.replayer, replayed.windows)
        return found
    finally:
        engine.dispose()
        await redis.aclose()


# -- output -------------------------------------------------------------------------------


def say(log: TextIO | None, line: str) -> None:
    if log is not None:
        print(line, file=log, flush=True)


class ProgressLine:
    """events/s and ETA on standard error, at most every ``every`` seconds (runs longer
    than ``after`` seconds only)."""

    def __init__(self, stream: TextIO = sys.stderr, every: float = 1.0, after: float = 2.0):
        self.stream = stream
        self.every = every
        self.after = after
        self.label = "replay"
        self.shown = False
        self.restart("replay")

    def restart(self, label: str) -> None:
        """Count a new phase from now."""
        self.close()
        self.label = label
        self.started = time.perf_counter()
        self.next = self.started + self.after
        self.shown = False

    def __call__(self, done: int, total: int) -> None:
        now = time.perf_counter()
        if now < self.next:
            return
        self.next = now + self.every
        rate = done / (now - self.started)
        left = (total - done) / rate if rate > 0 else 0.0
        share = 100 * done / total if total else 100.0
        end = "\r" if self.stream.isatty() else "\n"
        self.stream.write(
            f"{self.label}: {done:,}/{total:,} events ({share:.0f}%), {rate:,.0f} events/s, "
            f"ETA {left:.0f} s{end}"
        )
        self.stream.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown and self.stream.isatty():
            self.stream.write("\n")


def print_report(report: AuditReport, out: TextIO) -> None:
    replayed = report.replay
    counts = replayed.counts
    print(
        f"replay: {replayed.records:,} records, {counts['events']:,} events applied "
        f"({counts['duplicates']:,} verified duplicates), {replayed.seconds:.1f} s, "
        f"{report.events_per_second:,.0f} events/s",
        file=out,
    )
    if report.cut.until is not None or report.cut.offsets:
        cut = report.cut.until.isoformat() if report.cut.until else "the given offsets"
        print(
            f"cut: the state as of {cut}; {counts['after_cut']:,} later events left out", file=out
        )
    if replayed.skipped:
        skipped = ", ".join(f"{kind} {n:,}" for kind, n in sorted(replayed.skipped.items()))
        print(f"skipped (not replayed): {skipped}", file=out)
    if not replayed.positions:
        print("note: no event topic found (is BITEX_TOPIC_PREFIX right?)", file=out)
    print(f"state hash: {report.state_hash}", file=out)
    print(f"violations: {len(report.violations)}", file=out)
    for violation in report.violations[:SHOWN]:
        print(f"  [{violation.check}] {violation.message}", file=out)
        for place in violation.events:
            print(f"      {place}", file=out)
    if len(report.violations) > SHOWN:
        print(f"  ... and {len(report.violations) - SHOWN} more in the report", file=out)
    if report.compared:
        print(
            f"read models ({', '.join(report.compared)}): {len(report.differences)} differences",
            file=out,
        )
        for difference in report.differences[:SHOWN]:
            print(f"  {difference}", file=out)
        if len(report.differences) > SHOWN:
            print(f"  ... and {len(report.differences) - SHOWN} more in the report", file=out)
    else:
        why = "a cut is not the live state" if not report.cut.is_whole_log else "not asked"
        print(f"read models: not compared ({why})", file=out)
    print("OK" if report.ok else "FAILED", file=out)


def write_report(report: AuditReport, path: Path) -> None:
    path.write_bytes(orjson.dumps(report.to_json(), option=orjson.OPT_INDENT_2))


def parse_moment(text: str) -> datetime:
    """An ISO 8601 time; without a zone it is UTC."""
    from datetime import UTC

    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
