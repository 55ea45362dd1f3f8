"""The replay tool's rebuild and checks, over logs held in memory (no Kafka).

The logs are what the real processor cores write (``streams.local.LocalCluster``),
record for record; the tampered ones are those with one record removed,
forged, or re-encoded with a field changed. Each finding must name the event.
"""

from __future__ import annotations

import functools
import hashlib
import io
import multiprocessing
import pickle
import threading
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from multiprocessing.connection import Connection
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.persistence import Mapper
from hypothesis import given
from hypothesis import strategies as st

from domain.accounts import Account
from domain.audit_checks import (
    LEDGER,
    LOCKED_FUNDS,
    NEGATIVE_BALANCE,
    ORDER_STATUS,
    SETTLEMENT,
    TRADE,
    AccountAudit,
    Verdict,
    VersionTracker,
)
from domain.ledger import AVAILABLE
from domain.markets import demo_markets
from domain.matching import Side
from domain.replay import Replayer
from domain.state_hash import accounts_part, hash_parts, state_hash
from domain.users import User
from infra.event_records import EVENT_ID, EVENT_TOPIC, EVENT_VERSION, event_headers, stored_event
from infra.serialization import PARSERS, EventMapper, OrjsonTranscoder, conversions
from infra.topics import TopicMap
from projections import audit_replay
from projections.audit import conclude
from projections.audit_read import Position, Record
from projections.audit_replay import (
    ACCOUNT_WEIGHT,
    HERE,
    REFUSED,
    SKIP_WEIGHT,
    SPLIT_BOUNDS,
    THERE,
    VERSION_FORK,
    VERSION_GAP,
    AccountSide,
    Balance,
    Cut,
    Replay,
    Split,
    digest,
    hand_back,
    merge_accounts,
    parse_offsets,
    replay_logs,
    share,
    split_bound,
    take_back,
)
from projections.audit_statement import StatementSide, write_csv
from streams.local import LocalCluster
from tests.workload import T0, Workload

MARKETS = demo_markets()
TOPICS = TopicMap()
Logs = dict[Position, list[Record]]


def logs_of(cluster: LocalCluster) -> Logs:
    return {
        (topic, partition): [
            (offset, record.value, list(record.headers))
            for offset, record in enumerate(cluster.logs[topic, partition])
        ]
        for topic in TOPICS.event_topics
        for partition in range(TOPICS.partitions(topic))
    }


def run(cluster: LocalCluster, commands: list[Any]) -> None:
    for command in commands:
        cluster.send(command)
    cluster.run_until_quiet()


@functools.cache
def session() -> tuple[str, Logs]:
    """A trading session: the cores' state hash and their event logs."""
    cluster = LocalCluster(MARKETS, TOPICS)
    workload = Workload(seed=31, owners=15)
    run(cluster, workload.opening() + workload.trading(1200))
    return state_hash(cluster.accounts(), cluster.venues()), logs_of(cluster)


def fresh_logs() -> Logs:
    return {position: list(records) for position, records in session()[1].items()}


def audited(logs: Logs, cut: Cut | None = None) -> tuple[Replay, list[Any]]:
    """The replay as ``bitex replay`` runs it: no market known but those listed on the log."""
    replayed = replay_logs({}, logs, TOPICS, cut)
    return replayed, replayed.violations + conclude(replayed)


def hash_of(replayed: Replay) -> str:
    replayer = replayed.replayer
    digest = state_hash(replayer.accounts.values(), replayer.venues.values())
    assert hash_parts(accounts_part(replayer.accounts.values()), replayed.venue_lines) == digest
    return digest


def header_of(record: Record, name: str) -> bytes:
    return dict(record[2])[name]


def find(logs: Logs, topic: str, test: Callable[[Record], bool]) -> tuple[Position, int]:
    """The first record of ``topic`` passing ``test``: its partition and index."""
    for position, records in sorted(logs.items()):
        if position[0] != topic:
            continue
        for index, record in enumerate(records):
            if test(record):
                return position, index
    raise AssertionError(f"no such record on {topic}")


def is_event(name: str) -> Callable[[Record], bool]:
    return lambda record: header_of(record, EVENT_TOPIC) == name.encode()


def reencoded(record: Record, **changes: Any) -> Record:
    """The record with fields of its event changed (same identity, new bytes)."""
    mapper = EventMapper()
    stored = stored_event(record[1], record[2])
    assert stored is not None
    event = mapper.to_domain_event(stored)
    vars(event).update(changes)
    return (record[0], mapper.to_stored_event(event).state, record[2])


def appended(logs: Logs, position: Position, record: Record) -> None:
    """``record`` written again at the end of its partition (a new offset)."""
    records = logs[position]
    records.append((records[-1][0] + 1, record[1], record[2]))


# -- a clean log ---------------------------------------------------------------------


def test_a_session_replays_with_no_violation_to_the_cores_state_hash() -> None:
    live, logs = session()
    replayed, violations = audited(fresh_logs())
    assert violations == []
    assert hash_of(replayed) == live
    assert replayed.counts["events"] == sum(len(records) for records in logs.values())
    assert len(replayed.trades) > 200
    assert replayed.skipped == {}


def test_the_replay_learns_the_markets_from_their_listings_on_the_log() -> None:
    replayed, violations = audited(fresh_logs())
    assert replayed.replayer.markets == MARKETS
    # Every settlement was checked against its market (an unknown one is a violation).
    assert violations == []
    assert replayed.counts["events"] > 0
    # Markets known beforehand must agree with the listings.
    other = {**MARKETS, "BTC-USDT": demo_markets()["ETH-USDT"]}
    clashing = replay_logs(other, fresh_logs(), TOPICS)
    refused = [v.message for v in clashing.violations if v.check == REFUSED]
    assert "BTC-USDT is listed as" in refused[0]


def through_a_pipe(result: object) -> tuple[Any, Connection]:
    """``result`` handed back down a pipe as the child does it (written by a thread
    while this one reads), and the pipe's reading end, its writer gone."""
    receiver, sender = multiprocessing.Pipe(duplex=False)

    def child() -> None:  # as ``_account_process`` ends
        hand_back(sender, result)
        sender.close()

    writer = threading.Thread(target=child)
    writer.start()
    back = take_back(receiver)
    writer.join()
    return back, receiver


def test_a_hand_back_larger_than_the_pipe_is_read_as_it_is_written() -> None:
    replayed, _ = audited(fresh_logs())
    result = ("ok", (replayed.replayer.accounts, bytes(range(256)) * 8192))
    assert len(pickle.dumps(result)) > 1 << 21  # far beyond what a pipe holds unread
    back, receiver = through_a_pipe(result)
    assert back == result
    with pytest.raises(EOFError):  # nothing more: the writer is gone
        take_back(receiver)


def test_the_child_hands_back_its_accounts_equal_to_its_own() -> None:
    replayed, _ = audited(fresh_logs())
    accounts = replayed.replayer.accounts
    (status, back), _ = through_a_pipe(("ok", accounts))
    assert status == "ok"
    assert back == accounts
    for account_id, account in back.items():
        assert type(account.id) is UUID
        assert str(account.id) == str(account_id)
        assert account.order_ids == accounts[account_id].order_ids
    assert state_hash(back.values(), []) == state_hash(accounts.values(), [])


def test_identical_duplicates_are_skipped_and_counted() -> None:
    logs = fresh_logs()
    for position in [(TOPICS.user_events, 0), (TOPICS.order_events, 1)]:
        for record in logs[position][10:60]:
            appended(logs, position, record)
    replayed, violations = audited(logs)
    assert violations == []
    assert replayed.counts["duplicates"] == 100
    assert hash_of(replayed) == session()[0]


def test_the_mapper_decodes_every_logged_event_exactly_like_the_library_mapper() -> None:
    """``EventMapper`` (its plans per topic and its parsed values shared between
    events) gives what the eventsourcing Mapper gives, with the field types restored."""
    ours, library = EventMapper(), Mapper[UUID](transcoder=OrjsonTranscoder())
    for records in session()[1].values():
        for _, value, headers in records:
            stored = stored_event(value, headers)
            assert stored is not None
            one, other = ours.to_domain_event(stored), library.to_domain_event(stored)
            assert type(one) is type(other)
            for name, kind in conversions(type(other)):
                if isinstance(vars(other).get(name), str):
                    vars(other)[name] = PARSERS[kind](vars(other)[name])
            assert vars(one) == vars(other)
            assert {name: type(field) for name, field in vars(one).items()} == {
                name: type(field) for name, field in vars(other).items()
            }
            assert ours.to_stored_event(one).state == value


# -- identity: gaps and forks ------------------------------------------------------------


def test_a_gap_is_found_and_names_the_event_after_it() -> None:
    logs = fresh_logs()
    position, index = find(logs, TOPICS.user_events, is_event("bitex.account.FundsReleased"))
    removed = logs[position].pop(index)
    aggregate = header_of(removed, EVENT_ID).decode()
    version = int(header_of(removed, EVENT_VERSION))
    later = [r for r in logs[position][index:] if header_of(r, EVENT_ID).decode() == aggregate]
    _, violations = audited(logs)
    gaps = [v for v in violations if v.check == VERSION_GAP]
    assert len(gaps) == 1
    (place,) = gaps[0].events
    assert (place.aggregate_id, place.version) == (aggregate, version + 1)
    assert (place.topic, place.partition, place.offset) == (*position, later[0][0])
    assert f"from v{version - 1} to v{version + 1}" in gaps[0].message


def test_a_forged_duplicate_is_found_and_named() -> None:
    logs = fresh_logs()
    position, index = find(logs, TOPICS.user_events, is_event("bitex.account.Deposited"))
    original = logs[position][index]
    forged = reencoded(original, amount=Decimal("1000000.000000"))
    appended(logs, position, forged)
    replayed, violations = audited(logs)
    (fork,) = violations
    assert fork.check == VERSION_FORK
    (place,) = fork.events
    assert place.aggregate_id == header_of(original, EVENT_ID).decode()
    assert place.version == int(header_of(original, EVENT_VERSION))
    assert place.offset == logs[position][-1][0]
    assert hash_of(replayed) == session()[0], "the first copy is the one applied"


def test_a_forged_duplicate_arriving_first_is_found_too() -> None:
    logs = fresh_logs()
    position, index = find(logs, TOPICS.order_events, is_event("bitex.order.Filled"))
    original = logs[position][index]
    logs[position].insert(index, reencoded(original, quantity=Decimal("0.5000")))
    _, violations = audited(logs)
    assert VERSION_FORK in {v.check for v in violations}


# -- what is wrong with the money ----------------------------------------------------------


def test_a_settlement_with_a_wrong_fee_is_found() -> None:
    logs = fresh_logs()
    position, index = find(logs, TOPICS.user_events, is_event("bitex.account.TradeSettled"))
    record = logs[position][index]
    event = EventMapper().to_domain_event(stored_event(record[1], record[2]))  # type: ignore[arg-type]
    assert isinstance(event, Account.TradeSettled)
    fee = event.fee + Decimal(1).scaleb(event.fee.as_tuple().exponent)  # type: ignore[arg-type]
    logs[position][index] = reencoded(record, fee=fee)
    _, violations = audited(logs)
    found = [v for v in violations if v.check == SETTLEMENT]
    assert found, violations
    assert "fee" in found[0].message
    assert found[0].events[0].aggregate_id == str(event.originator_id)
    assert found[0].events[0].offset == record[0]


@pytest.mark.parametrize("rounded", [False, True])
def test_a_settlement_with_a_wrong_fee_rounding_is_found(rounded: bool) -> None:
    logs = fresh_logs()

    def settled(record: Record) -> bool:  # with or without a fee rounding
        if not is_event("bitex.account.TradeSettled")(record):
            return False
        event = EventMapper().to_domain_event(stored_event(record[1], record[2]))  # type: ignore[arg-type]
        return bool(event.fee_rounding) == rounded  # type: ignore[attr-defined]

    position, index = find(logs, TOPICS.user_events, settled)
    record = logs[position][index]
    wrong = Decimal("0") if rounded else Decimal("0.00000001")
    logs[position][index] = reencoded(record, fee_rounding=wrong)
    _, violations = audited(logs)
    found = [v for v in violations if v.check == SETTLEMENT]
    assert len(found) == 1, violations
    assert f"fee rounding {wrong}, the rules give" in found[0].message
    assert found[0].events[0].offset == record[0]


def test_a_trade_settled_under_another_id_is_found_on_both_trades() -> None:
    logs = fresh_logs()
    position, index = find(logs, TOPICS.user_events, is_event("bitex.account.TradeSettled"))
    record = logs[position][index]
    logs[position][index] = reencoded(record, trade_id="BTC-USDT:999999")
    _, violations = audited(logs)
    trades = [v for v in violations if v.check == TRADE]
    assert len(trades) == 2
    settles, short = trades
    assert "settles trade BTC-USDT:999999, which no market executed" in settles.message
    assert settles.events[0].offset == record[0]
    assert "taker settlements, not one of each (in flight, or lost)" in short.message
    assert short.events[0].event == "bitex.market.TradeExecuted"


def test_a_settlement_on_the_wrong_order_or_quantity_is_found_at_the_event() -> None:
    logs = fresh_logs()
    position, index = find(logs, TOPICS.user_events, is_event("bitex.account.TradeSettled"))
    record = logs[position][index]
    event = EventMapper().to_domain_event(stored_event(record[1], record[2]))  # type: ignore[arg-type]
    assert isinstance(event, Account.TradeSettled)
    logs[position][index] = reencoded(record, role="taker" if event.role == "maker" else "maker")
    _, violations = audited(logs)
    trades = [v for v in violations if v.check == TRADE and v.events[0].offset == record[0]]
    assert trades
    assert f"side on order {event.order_id}; the trade's" in trades[0].message


def test_an_order_whose_status_contradicts_its_fills_is_found() -> None:
    logs = fresh_logs()
    position, index = find(logs, TOPICS.order_events, is_event("bitex.order.Filled"))
    record = logs[position][index]
    headers = [
        (name, b"bitex.order.PartiallyFilled" if name == EVENT_TOPIC else value)
        for name, value in record[2]
    ]
    logs[position][index] = (record[0], record[1], headers)
    _, violations = audited(logs)
    statuses = [v for v in violations if v.check == ORDER_STATUS]
    assert statuses
    assert statuses[0].events[0].aggregate_id == header_of(record, EVENT_ID).decode()


def account_log(*events: Any) -> Logs:
    """Account events on the user-events partition of their account."""
    mapper = EventMapper()
    logs: Logs = {}
    for event in events:
        stored = mapper.to_stored_event(event)
        position = (TOPICS.user_events, TOPICS.account_partition(event.originator_id))
        records = logs.setdefault(position, [])
        records.append((len(records), stored.state, event_headers(stored, b"0:0")))
    return logs


def test_an_overdraft_breaks_no_balance_below_zero_and_names_the_event() -> None:
    usdt = MARKETS["BTC-USDT"].quote
    account = Account.open("ann", T0)
    account.deposit(usdt, Decimal(10), "tx-1", T0)
    events = account.collect_events()
    overdraft = Account.Withdrawn(
        originator_id=account.id,
        originator_version=3,
        timestamp=T0,
        asset="USDT",
        amount=Decimal("25.000000"),
        withdrawal_id="w-1",
    )
    replayed, violations = audited(account_log(*events, overdraft))
    (negative,) = [v for v in violations if v.check == NEGATIVE_BALANCE]
    assert "available -15" in negative.message
    assert (negative.events[0].version, negative.events[0].event) == (3, "bitex.account.Withdrawn")
    assert replayed.ledger.balance(str(account.id), "USDT", AVAILABLE) == -15_000_000


def test_an_event_the_domain_refuses_halts_its_aggregate() -> None:
    account = Account.open("bob", T0)
    events = account.collect_events()
    release = Account.FundsReleased(
        originator_id=account.id,
        originator_version=2,
        timestamp=T0,
        order_id=UUID(int=7),
        asset="USDT",
        amount=Decimal("1.000000"),
        reason="filled",
    )
    later = Account.FeeRatesSet(
        originator_id=account.id,
        originator_version=3,
        timestamp=T0,
        symbol="BTC-USDT",
        maker=Decimal(0),
        taker=Decimal(0),
    )
    replayed, violations = audited(account_log(*events, release, later))
    refused = [v for v in violations if v.check == REFUSED]
    assert len(refused) == 1
    assert refused[0].events[0].version == 2
    assert replayed.counts["halted"] == 1


def test_locked_funds_and_the_ledger_are_checked_against_the_account_at_every_event() -> None:
    replayer = Replayer(MARKETS)
    audit = AccountAudit(replayer)
    market = MARKETS["BTC-USDT"]
    account = Account.open("cy", T0)
    account.deposit(market.base, Decimal(1), "tx", T0)
    account.lock(UUID(int=9), market, Side.SELL, 10_000, Decimal(50_000), T0)
    opened, deposited, locked = account.collect_events()
    assert audit.apply(opened)[1] == []
    assert audit.apply(deposited)[1] == []
    # What an apply that locks more than it reserves would leave behind.
    replayer.accounts[account.id].holdings["BTC"].locked += 5
    _, found = audit.apply(locked)
    assert {finding.check for finding in found} == {LOCKED_FUNDS, LEDGER}
    assert any("locked 0.00010005 but its orders' reservations sum to" in f.message for f in found)


# -- what replays, what is skipped ----------------------------------------------------------


def test_users_are_replayed_and_unknown_kinds_skipped_and_counted() -> None:
    user = User.register("dee@example.com", "argon2-hash", "user", T0)
    logs = account_log(*user.collect_events())
    position = next(iter(logs))
    logs[position].append(
        (
            1,
            b"{}",
            [
                (EVENT_TOPIC, b"bitex.audit-test.Something"),
                (EVENT_ID, str(UUID(int=5)).encode()),
                (EVENT_VERSION, b"1"),
            ],
        )
    )
    replayed, violations = audited(logs)
    assert violations == []
    assert user.id in replayed.replayer.users
    assert replayed.skipped == {"bitex.audit-test": 1}


def test_version_tracker() -> None:
    tracker = VersionTracker(width=2)
    assert tracker.see("a", 1, b"11") is Verdict.NEW
    assert tracker.see("a", 2, b"22") is Verdict.NEW
    assert tracker.see("a", 1, b"11") is Verdict.DUPLICATE
    assert tracker.see("a", 2, b"2x") is Verdict.FORK
    assert tracker.see("a", 4, b"44") is Verdict.GAP
    assert tracker.see("b", 2, b"22") is Verdict.GAP
    assert tracker.last_version("a") == 2
    tracker.halt("a")
    assert tracker.see("a", 3, b"33") is Verdict.HALTED
    assert tracker.halted == {"a": 1}


@pytest.mark.parametrize("keyed", [True, False])
def test_an_event_digest_is_its_bytes_keyed(keyed: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audit_replay, "KEYED", keyed)
    event = b'{"amount":"1.00000000","asset":"BTC"}'
    forged = b'{"amount":"9.00000000","asset":"BTC"}'
    assert len(digest(event)) == 8
    assert digest(bytes(bytearray(event))) == digest(event)
    assert digest(forged) != digest(event)
    assert (digest(event) == hashlib.blake2b(event, digest_size=8).digest()) is not keyed


# -- cuts ---------------------------------------------------------------------------------


def test_until_and_until_offset_give_the_state_as_of_then() -> None:
    cluster = LocalCluster(MARKETS, TOPICS)
    workload = Workload(seed=32, owners=12)
    run(cluster, workload.opening() + workload.trading(500))
    then = state_hash(cluster.accounts(), cluster.venues())
    last = T0 + timedelta(milliseconds=workload.count)
    positions = {position: len(records) for position, records in logs_of(cluster).items()}
    run(cluster, workload.trading(500))
    logs = logs_of(cluster)
    assert state_hash(cluster.accounts(), cluster.venues()) != then

    replayed, violations = audited(logs, Cut(until=last))
    assert violations == []
    assert hash_of(replayed) == then
    assert replayed.counts["after_cut"] == sum(map(len, logs.values())) - sum(positions.values())

    replayed, violations = audited(logs, Cut(offsets=positions))
    assert violations == []
    assert hash_of(replayed) == then


def test_until_offset_is_parsed_from_the_reports_positions() -> None:
    topics = TopicMap(prefix="x-")
    assert parse_offsets("x-bitex.user-events:2=10, bitex.order-events:0=5", topics) == {
        ("x-bitex.user-events", 2): 10,
        ("x-bitex.order-events", 0): 5,
    }
    for wrong in ("bitex.user-events=3", "nope:0=1", "x-bitex.user-events:a=1"):
        with pytest.raises(ValueError, match="--until-offset"):
            parse_offsets(wrong, topics)


@pytest.mark.parametrize(
    ("market_records", "here", "there"),
    [(0, [1, 2], [0]), (90, [2], [0, 1]), (150, [], [0, 1, 2]), (400, [], [0, 1, 2])],
)
def test_whole_partitions_go_to_the_process_with_less_work_and_the_smallest_is_shared(
    market_records: int, here: list[int], there: list[int]
) -> None:
    accounts = [((TOPICS.user_events, p), 0, size) for p, size in enumerate([40, 30, 20, 10])]
    markets = [((TOPICS.order_events, 0), 0, market_records)]
    assert share(accounts, markets) == (
        [accounts[p] for p in here],
        [accounts[p] for p in there],
        accounts[3],
    )
    assert share([], markets) == ([], [], None)


@given(
    done=st.tuples(st.floats(1, 1e7), st.floats(1, 1e7)),
    left=st.tuples(st.floats(0, 1e7), st.floats(0, 1e7)),
    records=st.integers(1, 10**7),
)
def test_the_shared_partition_is_split_for_both_processes_to_end_together(
    done: tuple[float, float], left: tuple[float, float], records: int
) -> None:
    bound = split_bound(done, left, records)
    here = bound / SPLIT_BOUNDS
    there = 1 - here
    # Time left, in the same unit for both: work left over work done in the same time.
    time_here = (left[0] + records * (here * ACCOUNT_WEIGHT + there * SKIP_WEIGHT)) / done[0]
    time_there = (left[1] + records * (there * ACCOUNT_WEIGHT + here * SKIP_WEIGHT)) / done[1]
    if bound == 0:  # here ends last even with none of it
        assert time_here >= time_there * (1 - 1e-9)
    elif bound == SPLIT_BOUNDS:  # the child does
        assert time_there >= time_here * (1 - 1e-9)
    else:
        assert time_here == pytest.approx(time_there, rel=1e-6)


@given(raw_id=st.binary(min_size=1, max_size=40))
def test_a_split_at_either_end_gives_one_process_every_event(raw_id: bytes) -> None:
    span = ((TOPICS.user_events, 0), 0, 10)
    for bound, owner in ((0, False), (SPLIT_BOUNDS, True)):  # the child skips the read
        split = Split(span, bound)
        assert split.owner(here=owner)(raw_id)
        assert not split.owner(here=not owner)(raw_id)


def test_the_first_process_to_reach_the_shared_partition_splits_it_for_both() -> None:
    span = ((TOPICS.user_events, 0), 0, 1000)
    balance = Balance(multiprocessing.get_context("spawn"), span, (500.0, 800.0), (50.0, 10.0))
    balance.did(HERE, 500.0)  # here has done all it had, at twice the child's speed
    balance.did(THERE, 250.0)
    split = balance.split()
    assert split.span == span
    assert split.bound == split_bound((500.0, 250.0), (50.0, 560.0), 1000)
    assert SPLIT_BOUNDS // 2 < split.bound < SPLIT_BOUNDS  # here, faster and nearly done
    balance.did(THERE, 550.0)
    assert balance.split() == split  # decided once


def test_a_shared_partition_is_replayed_once_between_the_two_processes() -> None:
    logs = fresh_logs()
    whole = replay_logs({}, logs, TOPICS)
    position = (TOPICS.user_events, 0)
    records = logs[position]

    def account_side() -> AccountSide:
        return AccountSide(whole.replayer.markets, None, False, whole.trades)

    alone = account_side()
    alone.feed(*position, records)
    split = Split((position, 0, len(records)), SPLIT_BOUNDS // 3)
    parts = []
    for here in (True, False):
        side = account_side()
        side.owned[position] = split.owner(here)
        side.feed(*position, records)
        parts.append(side.result())
    assert all(part.accounts for part in parts)  # each replayed some of them
    assert not parts[0].accounts.keys() & parts[1].accounts.keys()
    merged, expected = merge_accounts(parts), alone.result()
    assert merged.accounts == expected.accounts
    assert merged.users == expected.users
    assert merged.ledger.balances == expected.ledger.balances
    assert merged.settled == expected.settled
    assert merged.counts == expected.counts
    assert merged.violations == expected.violations == []


# -- statements ---------------------------------------------------------------------------


def statement_of(logs: Logs, name: str, start: Any, end: Any) -> Any:
    side = StatementSide(MARKETS, name, start, end)
    for (topic, partition), records in sorted(logs.items()):
        if topic == TOPICS.user_events:
            side.feed(topic, partition, records)
    return side


def test_a_statement_reconciles_opening_entries_and_closing() -> None:
    logs = fresh_logs()
    position, index = find(logs, TOPICS.user_events, is_event("bitex.account.TradeSettled"))
    account_id = UUID(header_of(logs[position][index], EVENT_ID).decode())
    start, end = T0 + timedelta(milliseconds=400), T0 + timedelta(milliseconds=900)
    side = statement_of(logs, str(account_id), start, end)
    found = side.statement
    assert found.opening
    assert found.entries
    assert all(start <= entry.at < end for entry in found.entries)
    # The closing balances are those of the account replayed up to --to.
    cut = replay_logs(MARKETS, logs, TOPICS, Cut(until=end - timedelta(microseconds=1)))
    held = cut.replayer.accounts[account_id]
    for (asset, bucket), units in found.closing.items():
        holding = held.holdings[asset]
        assert units == (holding.available if bucket == AVAILABLE else holding.locked)
    out = io.StringIO()
    write_csv(found, MARKETS, out)
    rows = out.getvalue().splitlines()
    assert rows[0].startswith("row,at,account,event")
    assert sum(row.startswith("entry,") for row in rows) == len(found.entries)
    assert rows[-1].startswith("closing,")


def test_a_fee_statement_adds_up_to_the_fees_ledger() -> None:
    side = statement_of(fresh_logs(), "fees", None, None)
    found = side.statement
    ledger = side.audit.ledger
    assert found.entries
    for (asset, bucket), units in found.closing.items():
        assert units == ledger.balance("fees", asset, bucket)
