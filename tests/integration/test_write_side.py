"""The write side on the real Kafka: one order's way from command to settlement."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from domain.aggregates import account_id_for
from domain.markets import market_from_fields
from infra import messages
from infra.command_client import CommandClient
from infra.event_records import EVENT_TOPIC, header
from infra.settings import Settings
from infra.topics import TopicMap
from streams.snapshots import Snapshot
from streams.workers import WORKER_ROLES, WriteSide

pytestmark = pytest.mark.integration


@pytest.fixture
async def write_side(
    settings: Settings, unique: Callable[[str], str], tmp_path: Path
) -> AsyncIterator[WriteSide]:
    side = WriteSide(settings, TopicMap(prefix=unique("ws") + "-"), tmp_path)
    await side.create_topics()
    for role in WORKER_ROLES:
        side.start(role)
    try:
        for role in WORKER_ROLES:
            await side.wait_ready(role)
        yield side
    finally:
        side.stop()
        await side.delete_topics()


async def test_an_order_is_locked_matched_settled_and_lands_on_the_right_topics(
    write_side: WriteSide,
) -> None:
    topics = write_side.topics
    alice, bob = account_id_for("alice"), account_id_for("bob")
    async with CommandClient(write_side.settings, topics) as client:

        async def run(kind: str, account: object, **fields: object) -> messages.Outcome:
            command = client.stamp(kind, account, fields)  # type: ignore[arg-type]
            outcome = await client.execute(command, timeout=30)
            assert outcome is not None, f"no outcome for {kind}"
            return outcome

        for owner in ("alice", "bob"):
            assert (await run(messages.OPEN_ACCOUNT, account_id_for(owner), owner=owner)).ok
        assert (await run(messages.DEPOSIT, alice, asset="USDT", amount="100000", tx_id="a")).ok
        assert (await run(messages.DEPOSIT, bob, asset="BTC", amount="2", tx_id="b")).ok
        sell = await run(
            messages.PLACE_ORDER, bob, symbol="BTC-USDT", side="sell", type="limit",
            price="50000", quantity="1",
        )  # fmt: skip
        assert sell.details["status"] == "open"
        buy = await run(
            messages.PLACE_ORDER, alice, symbol="BTC-USDT", side="buy", type="limit",
            price="50000", quantity="0.4",
        )  # fmt: skip
        assert (buy.details["status"], buy.details["filled_quantity"]) == ("filled", "0.40000000")
        refused = await run(messages.WITHDRAW, alice, asset="USDT", amount="80000.000001")
        assert (refused.ok, refused.code) == (False, "insufficient_funds")
        await write_side.wait_idle()

    def topics_of(records: list[tuple[bytes, object]]) -> list[str]:
        return [(header(h, EVENT_TOPIC) or b"").decode() for _, h in records]  # type: ignore[arg-type]

    user = topics_of(await write_side.read(topics.user_events))
    assert user.count("bitex.account.TradeSettled") == 2
    assert user.count("bitex.account.FundsLocked") == 2
    assert "bitex.account.FundsReleased" in user  # the filled buy closed its reservation
    orders = topics_of(await write_side.read(topics.order_events))
    assert orders == [
        "bitex.order.Accepted",
        "bitex.order.Rested",
        "bitex.order.Accepted",
        "bitex.order.PartiallyFilled",
        "bitex.order.Filled",
    ]
    market = topics_of(await write_side.read(topics.market_events))
    # The harness listed the demo markets first: BTC-USDT on partition 0, the others on 1.
    listed, traded = "bitex.market.Listed", "bitex.market.TradeExecuted"
    assert market == [listed, traded, listed, listed]


async def test_each_account_partition_keeps_the_listed_markets_in_a_snapshot(
    write_side: WriteSide,
) -> None:
    """The relay of a listing expires with the inbox; a snapshot taken at once keeps it."""
    await write_side.wait_idle()
    snapshots = await write_side.read_partitions(write_side.topics.account_snapshots)
    partitions = write_side.topics.specs()
    accounts = next(s for s in partitions if s.name == write_side.topics.account_commands)
    assert len(snapshots) == accounts.partitions
    for records in snapshots.values():
        latest = Snapshot.decode(records[-1][0])
        listed = {market_from_fields(fields).symbol for fields in latest.state["markets"]}
        assert listed == set(write_side.markets)
