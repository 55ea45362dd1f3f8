"""The processor cores, wired in memory: equal to the reference, and crash-proof."""

from __future__ import annotations

import random

import pytest

from domain.aggregates import order_id_for
from domain.exchange import Exchange
from domain.invariants import check_state
from domain.ledger import Ledger
from domain.markets import demo_markets
from domain.replay import Replayer
from domain.state_hash import state_hash
from infra import messages
from infra.event_records import Headers
from infra.messages import Outcome
from streams.local import LocalCluster
from streams.rebuild import rebuild
from tests.workload import T0, Workload, apply_to_exchange


def replay_logs(cluster: LocalCluster) -> tuple[Replayer, Ledger]:
    """Rebuild the state from the event logs alone, dropping verified duplicates."""
    topics = cluster.topics

    def records(topic: str) -> list[tuple[bytes, Headers]]:
        return [(r.value, r.headers) for r in cluster.event_log(topic)]

    rebuilt = rebuild(
        cluster.markets,
        records(topics.market_events),
        records(topics.order_events),
        records(topics.user_events),
    )
    assert rebuilt.duplicates > 0, "crashes must have re-emitted something"
    return rebuilt.replayer, rebuilt.ledger


def test_one_command_at_a_time_the_cluster_equals_the_in_process_exchange() -> None:
    markets = demo_markets()
    exchange = Exchange(markets, T0)
    cluster = LocalCluster(markets)
    workload = Workload(seed=7, owners=12)
    commands = workload.opening() + workload.trading(1500, amend_post_only=False)
    for command in commands:
        apply_to_exchange(exchange, command)
        cluster.send(command)
        cluster.run_until_quiet()
    exchange.collect_events()
    live = state_hash(exchange.accounts.values(), exchange.venues.values())
    assert state_hash(cluster.accounts(), cluster.venues()) == live
    trades = sum(v.tape.version - 1 for v in cluster.venues())
    assert trades > 300, "the workload must trade a lot to mean anything"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_crashed_cores_recover_to_the_state_of_a_run_without_crashes(seed: int) -> None:
    markets = demo_markets()
    rng = random.Random(seed)
    workload = Workload(seed=seed, owners=10)
    commands = workload.opening() + workload.trading(1200)
    crashy, calm = LocalCluster(markets), LocalCluster(markets)
    inboxes = list(crashy.cores)
    crashes = 0
    for command in commands:
        crashy.send(command)
        calm.send(command)
        # Interleave the cores at random, with a crash now and then.
        for _ in range(rng.randint(1, 6)):
            inbox = rng.choice(inboxes)
            crashy.step(*inbox)
            if rng.random() < 0.01:
                crashy.snapshot(*inbox)
            if rng.random() < 0.01:
                consumed = crashy.consumed[inbox]
                crashy.crash(*inbox, resume_at=max(0, consumed - rng.randint(0, 5)))
                crashes += 1
    crashy.run_until_quiet()
    assert crashes >= 10
    # The calm cluster consumes, once, the inbox logs the crashy one recorded.
    for inbox in inboxes:
        calm.logs[inbox] = list(crashy.logs[inbox])
        while calm.step(*inbox, route=False):
            pass
    assert state_hash(crashy.accounts(), crashy.venues()) == state_hash(
        calm.accounts(), calm.venues()
    )
    replayer, ledger = replay_logs(crashy)
    assert state_hash(replayer.accounts.values(), replayer.venues.values()) == state_hash(
        crashy.accounts(), crashy.venues()
    )
    assert check_state(replayer.accounts.values(), replayer.venues.values(), ledger) == []
    assert len(crashy.logs[crashy.topics.matching_commands, 0]) > 0


def test_a_second_amend_waits_until_the_book_answered_the_first() -> None:
    markets = demo_markets()
    cluster = LocalCluster(markets)
    workload = Workload(seed=3, owners=1)
    owner = workload.owners[0]
    for command in workload.opening():
        cluster.send(command)
    place = workload.command(
        messages.PLACE_ORDER, owner, symbol="BTC-USDT", side="buy", type="limit",
        price="100", quantity="1",
    )  # fmt: skip
    cluster.send(place)
    cluster.run_until_quiet()
    order_id = order_id_for(place.account_id, None, place.command_id)
    first = workload.command(
        messages.AMEND_ORDER, owner, order_id=str(order_id), price="90", quantity="3"
    )
    second = workload.command(
        messages.AMEND_ORDER, owner, order_id=str(order_id), price="80", quantity="2"
    )
    cluster.send(first)
    cluster.send(second)
    account_inbox = (
        cluster.topics.account_commands,
        cluster.topics.account_partition(place.account_id),
    )
    while cluster.step(*account_inbox):  # the account takes both before the book sees either
        pass
    cluster.run_until_quiet()
    outcomes = {
        o.command_id: o
        for o in (Outcome.decode(r.value) for r in cluster.logs[cluster.topics.outcomes, 0])
    }
    assert outcomes[first.command_id].ok
    assert outcomes[second.command_id].code == "amend_in_progress"
    (account,) = cluster.accounts()
    assert account.reservations[order_id].units == 270_000_000  # 3 x 90 USDT, nothing pending
    assert check_state(cluster.accounts(), cluster.venues()) == []
