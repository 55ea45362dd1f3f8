"""The processor cores, wired in memory: equal to the reference, and crash-proof."""

from __future__ import annotations

import random

import pytest

from domain.exchange import Exchange
from domain.invariants import check_state
from domain.ledger import Ledger
from domain.markets import demo_markets
from domain.replay import Replayer
from domain.state_hash import state_hash
from infra.event_records import stored_event
from infra.serialization import EventMapper
from streams.dedupe import SeenEvents
from streams.local import LocalCluster
from tests.workload import T0, Workload, apply_to_exchange


def replay_logs(cluster: LocalCluster) -> tuple[Replayer, Ledger]:
    """Rebuild the state from the event logs alone, dropping verified duplicates."""
    mapper, seen = EventMapper(), SeenEvents()
    replayer, ledger = Replayer(cluster.markets), Ledger()
    topics = cluster.topics
    for topic in (topics.market_events, topics.order_events, topics.user_events):
        for record in cluster.event_log(topic):
            stored = stored_event(record.value, record.headers)
            assert stored is not None
            if not seen.is_new(stored.originator_id, stored.originator_version, stored.state):  # type: ignore[arg-type]
                continue
            event = mapper.to_domain_event(stored)
            replayer.apply(event)
            ledger.apply(event)
    return replayer, ledger


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
