"""Markets listed at runtime: the listing event, and each core taking it at a point of its input."""

from __future__ import annotations

import random
from dataclasses import replace
from decimal import Decimal

import orjson
import pytest

from domain.aggregates import account_id_for, market_id_for
from domain.exchange import Exchange
from domain.invariants import check_state
from domain.markets import Market, demo_markets, market_fields, market_from_fields
from domain.money import Asset
from domain.replay import Replayer
from domain.state_hash import state_hash
from domain.venue import TradeTape
from infra import messages
from infra.event_records import header, stored_event
from infra.messages import Command, Outcome
from infra.serialization import EventMapper
from streams.account_processor import AccountProcessor
from streams.forwards import KIND, MARKET_LISTED
from streams.local import LocalCluster
from streams.matching_processor import MatchingProcessor
from streams.rebuild import rebuild
from streams.records import OutRecord
from tests.workload import SOL_USDT, T0, Workload, apply_to_exchange

OPERATOR = "operator-desk"


def listing(workload: Workload, market: Market) -> Command:
    return workload.command(messages.LIST_MARKET, OPERATOR, **market_fields(market))


def outcomes(cluster: LocalCluster) -> dict[str, Outcome]:
    found = (Outcome.decode(r.value) for r in cluster.logs[cluster.topics.outcomes, 0])
    return {outcome.command_id: outcome for outcome in found}


def listed_events(cluster: LocalCluster) -> list[TradeTape.Listed]:
    mapper = EventMapper()
    found = []
    for record in cluster.event_log(cluster.topics.market_events):
        stored = stored_event(record.value, record.headers)
        assert stored is not None
        event = mapper.to_domain_event(stored)
        if isinstance(event, TradeTape.Listed):
            found.append(event)
    return found


def account_markets(cluster: LocalCluster) -> list[dict[str, Market]]:
    return [core.markets for core in cluster.cores.values() if isinstance(core, AccountProcessor)]


# -- the domain ---------------------------------------------------------------------


def test_a_listing_event_carries_every_rule_of_its_market_and_always_the_same_bytes() -> None:
    mapper = EventMapper()
    first = mapper.to_stored_event(TradeTape.open(SOL_USDT, T0).collect_events()[0])
    again = mapper.to_stored_event(TradeTape.open(SOL_USDT, T0).collect_events()[0])
    assert first.topic == "bitex.market.Listed"
    assert first.originator_id == market_id_for("SOL-USDT")
    assert first.state == again.state
    assert orjson.loads(first.state)["tick_size"] == "0.001"
    tape = mapper.to_domain_event(first).mutate(None)
    assert isinstance(tape, TradeTape)
    assert tape.market == SOL_USDT
    assert tape.symbol == "SOL-USDT"


def test_the_same_market_written_with_trailing_zeros_is_the_same_listing() -> None:
    fields = {**market_fields(SOL_USDT), "tick_size": "0.00100", "max_quantity": "100000.0"}
    assert market_from_fields(fields) == SOL_USDT
    assert market_fields(market_from_fields(fields)) == market_fields(SOL_USDT)


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"tick_size": "0.0000001"}, "tick_size"),  # finer than USDT's 6 decimals
        ({"lot_size": "0.0001", "tick_size": "0.001"}, "tick_size x lot_size"),
        ({"quote": "SOL"}, "against itself"),
        ({"min_notional": "-1"}, "min_notional"),
        ({"min_quantity": "1000000"}, "min_quantity exceeds max_quantity"),
        ({"maker_fee": "1"}, "fee rate"),
        ({"base_scale": "9"}, "base_scale must be an integer"),
        ({"base": "sol"}, "asset code"),
        ({"tick_size": 0.001}, "decimal string"),
        ({"lot_size": None}, "needs lot_size"),
    ],
)
def test_a_misconfigured_market_is_refused_by_its_constructor(
    change: dict[str, object], complaint: str
) -> None:
    with pytest.raises(ValueError, match=complaint):
        market_from_fields({**market_fields(SOL_USDT), **change})


def test_a_replay_takes_markets_from_their_listings() -> None:
    replayer = Replayer()
    mapper = EventMapper()
    (event,) = TradeTape.open(SOL_USDT, T0).collect_events()
    replayer.apply(mapper.to_domain_event(mapper.to_stored_event(event)))
    assert replayer.markets == {"SOL-USDT": SOL_USDT}
    assert replayer.venues["SOL-USDT"].market == SOL_USDT


# -- the cores ------------------------------------------------------------------------


def test_orders_before_a_listing_are_refused_and_after_it_trade() -> None:
    cluster = LocalCluster({})
    workload = Workload(seed=1, owners=2)
    buyer, seller = workload.owners
    opening = [workload.command(messages.OPEN_ACCOUNT, o, owner=o) for o in workload.owners]
    early_deposit = workload.command(
        messages.DEPOSIT, seller, asset="SOL", amount="10", tx_id="early"
    )
    early_order = workload.command(
        messages.PLACE_ORDER, seller, symbol="SOL-USDT", side="sell", type="limit",
        price="150", quantity="2",
    )  # fmt: skip
    for command in [*opening, early_deposit, early_order]:
        cluster.send(command)
    cluster.run_until_quiet()
    assert outcomes(cluster)[early_deposit.command_id].code == "unknown_asset"
    assert outcomes(cluster)[early_order.command_id].code == "unknown_market"

    listed = listing(workload, SOL_USDT)
    cluster.send(listed)
    cluster.run_until_quiet()
    assert outcomes(cluster)[listed.command_id].ok
    assert outcomes(cluster)[listed.command_id].details["result"] == "listed"
    (event,) = listed_events(cluster)
    assert event.timestamp == listed.at  # the listing command's stamped time
    matching = cluster.topics.market_partition("SOL-USDT")
    relays = [
        partition
        for partition in range(cluster.topics.account_partitions)
        for record in cluster.logs[cluster.topics.account_commands, partition]
        if header(record.headers, KIND) == MARKET_LISTED
    ]
    assert relays == list(range(cluster.topics.account_partitions))
    assert all(markets == {"SOL-USDT": SOL_USDT} for markets in account_markets(cluster))
    core = cluster.cores[cluster.topics.matching_commands, matching]
    assert isinstance(core, MatchingProcessor)
    assert core.markets == {"SOL-USDT": SOL_USDT}

    trading = [
        workload.command(messages.DEPOSIT, seller, asset="SOL", amount="10", tx_id="sol"),
        workload.command(messages.DEPOSIT, buyer, asset="USDT", amount="1000", tx_id="usdt"),
        workload.command(
            messages.PLACE_ORDER, seller, symbol="SOL-USDT", side="sell", type="limit",
            price="150", quantity="2",
        ),
        workload.command(
            messages.PLACE_ORDER, buyer, symbol="SOL-USDT", side="buy", type="limit",
            price="150.5", quantity="2",
        ),
    ]  # fmt: skip
    for command in trading:
        cluster.send(command)
    cluster.run_until_quiet()
    assert all(outcomes(cluster)[c.command_id].ok for c in trading)
    (venue,) = cluster.venues()
    assert venue.tape.version == 2  # listed, then one trade
    assert check_state(cluster.accounts(), cluster.venues()) == []


def test_listing_again_changes_nothing_and_other_rules_are_refused() -> None:
    cluster = LocalCluster({})
    workload = Workload(seed=2, owners=1)
    first, again = listing(workload, SOL_USDT), listing(workload, SOL_USDT)
    other = listing(workload, replace(SOL_USDT, tick_size=Decimal("0.01")))
    cluster.send(first)
    cluster.run_until_quiet()
    before = {key: list(log) for key, log in cluster.logs.items() if key[0] != "bitex.outcomes"}
    cluster.send(again)
    cluster.send(other)
    cluster.run_until_quiet()
    found = outcomes(cluster)
    assert found[again.command_id].ok
    assert found[again.command_id].details["result"] == "already_listed"
    assert found[other.command_id].code == "market_exists"
    after = {key: list(log) for key, log in cluster.logs.items() if key[0] != "bitex.outcomes"}
    account_inbox = (
        cluster.topics.account_commands,
        cluster.topics.account_partition(account_id_for(OPERATOR)),
    )
    # Nothing new but the two commands themselves, on the operator's inbox.
    after[account_inbox] = after[account_inbox][:-2]
    assert after == before
    assert len(listed_events(cluster)) == 1


def test_two_listings_racing_to_the_book_list_once() -> None:
    """Both pass the account processor (neither is listed yet); the book takes the first."""
    cluster = LocalCluster({})
    workload = Workload(seed=3, owners=1)
    first = listing(workload, SOL_USDT)
    other = listing(workload, replace(SOL_USDT, max_quantity=Decimal("500")))
    cluster.send(first)
    cluster.send(other)
    account_inbox = (
        cluster.topics.account_commands,
        cluster.topics.account_partition(account_id_for(OPERATOR)),
    )
    while cluster.step(*account_inbox):
        pass
    cluster.run_until_quiet()
    found = outcomes(cluster)
    assert found[first.command_id].ok
    assert found[other.command_id].code == "market_exists"
    assert [event.symbol for event in listed_events(cluster)] == ["SOL-USDT"]


def test_a_market_whose_asset_has_another_scale_is_refused() -> None:
    cluster = LocalCluster({})
    workload = Workload(seed=4, owners=1)
    usdt8 = replace(
        SOL_USDT, base=Asset("ADA", 6), quote=Asset("USDT", 8), tick_size=Decimal("0.0001")
    )
    first, clash = listing(workload, SOL_USDT), listing(workload, usdt8)
    for command in (first, clash):
        cluster.send(command)
        cluster.run_until_quiet()
    assert outcomes(cluster)[clash.command_id].code == "asset_scale_conflict"
    assert len(listed_events(cluster)) == 1


def test_a_malformed_listing_is_refused_and_publishes_nothing() -> None:
    cluster = LocalCluster({})
    workload = Workload(seed=5, owners=1)
    bad = workload.command(
        messages.LIST_MARKET, OPERATOR, **{**market_fields(SOL_USDT), "lot_size": "0.0001"}
    )
    cluster.send(bad)
    cluster.run_until_quiet()
    assert outcomes(cluster)[bad.command_id].code == "invalid_market"
    assert not list(cluster.event_log(cluster.topics.market_events))
    assert not any(cluster.logs[cluster.topics.matching_commands, p] for p in (0, 1))


def listed_then_traded(workload: Workload) -> list[Command]:
    """The demo markets listed by command, then a funded, busy workload."""
    listings = [listing(workload, market) for market in demo_markets().values()]
    return listings + workload.opening() + workload.trading(600, amend_post_only=False)


def test_markets_listed_by_command_trade_as_markets_held_from_the_start() -> None:
    workload = Workload(seed=6, owners=8)
    exchange = Exchange(demo_markets(), T0)
    cluster = LocalCluster({})
    for command in listed_then_traded(workload):
        if command.kind != messages.LIST_MARKET:
            apply_to_exchange(exchange, command)
        cluster.send(command)
        cluster.run_until_quiet()
    exchange.collect_events()
    assert state_hash(cluster.accounts(), cluster.venues()) == state_hash(
        exchange.accounts.values(), exchange.venues.values()
    )
    topics = cluster.topics
    rebuilt = rebuild(
        {},
        [(r.value, r.headers) for r in cluster.event_log(topics.market_events)],
        [(r.value, r.headers) for r in cluster.event_log(topics.order_events)],
        [(r.value, r.headers) for r in cluster.event_log(topics.user_events)],
    )
    assert rebuilt.replayer.markets == demo_markets()


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_restored_cores_know_the_markets_listed_before_their_resume_point(seed: int) -> None:
    """Crashes (from the log alone and from snapshots) before, at and after the
    listings: the outputs equal, byte for byte, one calm pass over the same inboxes."""
    rng = random.Random(seed)
    workload = Workload(seed=seed, owners=6)
    commands = listed_then_traded(workload)
    crashy, calm = LocalCluster({}), LocalCluster({})
    inboxes = list(crashy.cores)
    crashes = 0
    for command in commands:
        crashy.send(command)
        for _ in range(rng.randint(1, 6)):
            inbox = rng.choice(inboxes)
            crashy.step(*inbox)
            if rng.random() < 0.03:
                crashy.snapshot(*inbox)
            if rng.random() < 0.03:
                consumed = crashy.consumed[inbox]
                crashy.crash(*inbox, resume_at=max(0, consumed - rng.randint(0, 5)))
                crashes += 1
    crashy.run_until_quiet()
    assert crashes >= 20
    calm_out: list[OutRecord] = []
    for inbox in inboxes:
        calm.logs[inbox] = list(crashy.logs[inbox])
        while calm.step(*inbox, route=False, sink=calm_out):
            pass
    assert state_hash(crashy.accounts(), crashy.venues()) == state_hash(
        calm.accounts(), calm.venues()
    )
    for key, core in crashy.cores.items():
        assert core.markets == calm.cores[key].markets
    assert all(markets == demo_markets() for markets in account_markets(crashy))
    # Every record the crashy cores wrote is one the calm pass wrote (re-emissions included).
    for topic in (crashy.topics.market_events, crashy.topics.user_events):
        written = {(r.partition, r.key, r.value) for r in crashy.event_log(topic)}
        assert written == {(r.partition, r.key, r.value) for r in calm_out if r.topic == topic}
    assert check_state(crashy.accounts(), crashy.venues()) == []


def test_a_core_restored_from_a_snapshot_knows_its_markets() -> None:
    workload = Workload(seed=21, owners=2)
    cluster = LocalCluster({})
    for market in demo_markets().values():
        cluster.send(listing(workload, market))
    cluster.run_until_quiet()
    for inbox in list(cluster.cores):
        before = cluster.cores[inbox].markets
        cluster.snapshot(*inbox)
        # Lose the logs before the snapshot: the snapshot alone must carry the markets.
        cluster.logs[inbox] = [None] * len(cluster.logs[inbox])  # type: ignore[list-item]
        for topic in cluster.own_logs[inbox[0]]:
            cluster.logs[topic, inbox[1]] = [None] * len(cluster.logs[topic, inbox[1]])  # type: ignore[list-item]
        cluster.crash(*inbox, resume_at=cluster.consumed[inbox])
        assert cluster.cores[inbox].markets == before
    assert all(markets == demo_markets() for markets in account_markets(cluster))
    venues = {venue.market.symbol: venue.market for venue in cluster.venues()}
    assert venues == demo_markets()
