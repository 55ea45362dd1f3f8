"""Any number a client can send is either a valid order or a refusal, never a crash."""

from __future__ import annotations

from decimal import Decimal
from uuid import UUID

from hypothesis import example, given
from hypothesis import strategies as st

from domain.errors import DomainError
from domain.markets import demo_markets
from domain.matching import Side
from domain.orders import OrderType, validate_order

MARKET = demo_markets()["BTC-USDT"]
ANY_DECIMAL = st.decimals(allow_nan=False, allow_infinity=False) | st.sampled_from(
    [Decimal("1e30"), Decimal("1E+999999"), Decimal("1e-999999"), Decimal("-0"), Decimal("0.01")]
)


@given(price=ANY_DECIMAL, quantity=ANY_DECIMAL)
@example(price=Decimal("30000.00"), quantity=Decimal("1.5"))
@example(price=Decimal("0.01"), quantity=Decimal("1000"))
def test_a_limit_order_is_valid_or_refused(price: Decimal, quantity: Decimal) -> None:
    try:
        request = validate_order(
            MARKET,
            order_id=UUID(int=1),
            account_id=UUID(int=2),
            side=Side.BUY,
            type=OrderType.LIMIT,
            price=price,
            quantity=quantity,
        )
    except DomainError as refusal:
        code = refusal.code
    else:
        code = None
    if code is not None:
        assert code in {"invalid_price", "invalid_quantity", "min_notional", "invalid_order"}
        return
    assert request.price_ticks is not None
    assert MARKET.ticks_to_price(request.price_ticks) == price
    assert MARKET.lots_to_quantity(request.lots or 0) == quantity
