"""What the aggregates share: their construction from a created event, the enum
members and minor units read from events' strings and amounts."""

from __future__ import annotations

from decimal import Decimal

import pytest
from eventsourcing.domain import CanInitAggregate
from hypothesis import given
from hypothesis import strategies as st

from domain.aggregates import StampedCreated, member
from domain.matching import Side, TimeInForce
from domain.money import units_of
from domain.users import User
from tests.unit.conftest import T0
from tests.unit.test_serialization import a_busy_world


def test_a_created_event_builds_what_the_library_builds() -> None:
    world = a_busy_world()
    user = User.register("ann@example.com", "hash", "user", T0)
    created = [e for e in [*world.events, *user.collect_events()] if isinstance(e, StampedCreated)]
    kinds = {type(event).__qualname__ for event in created}
    assert {"Account.Opened", "Order.Accepted", "TradeTape.Listed", "User.Registered"} <= kinds
    for event in created:
        ours = event.mutate(None)
        library = CanInitAggregate.mutate(event, None)
        assert type(ours) is type(library)
        assert ours.__dict__ == library.__dict__


def test_an_enum_member_is_found_by_its_value_or_refused() -> None:
    assert member(Side, "buy") is Side.BUY
    assert member(TimeInForce, "IOC") is TimeInForce.IOC
    with pytest.raises(ValueError, match="nope"):
        member(Side, "nope")


@given(units=st.integers(-(10**24), 10**24), scale=st.integers(0, 18))
def test_units_are_an_amounts_digits_at_its_own_scale(units: int, scale: int) -> None:
    amount = Decimal(units).scaleb(-scale)
    assert units_of(amount) == units
    assert units_of(amount) == units  # again, as kept
    wider = Decimal(units * 10).scaleb(-scale - 1)  # equal, one more decimal
    assert wider == amount
    assert units_of(wider) == units * 10
    assert units_of(amount) == units
