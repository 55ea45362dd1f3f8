"""MySQL is real: tables written and read through SQLAlchemy 2 + PyMySQL."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

pytestmark = pytest.mark.integration


def test_table_round_trip_exact_and_transactional(
    engine: Engine, unique: Callable[[str], str]
) -> None:
    metadata = sa.MetaData()
    table = sa.Table(
        unique("balances").replace("-", "_"),
        metadata,
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("amount", sa.Numeric(36, 18, asdecimal=True), nullable=False),
        mysql_engine="InnoDB",
    )
    metadata.create_all(engine)
    try:
        rows = [
            {"id": 1, "owner": "alice@example.com", "amount": Decimal("0.000000000000000001")},
            {
                "id": 2,
                "owner": "bőb 🚀",
                "amount": Decimal("123456789012345678.123456789012345678"),
            },
        ]
        with engine.begin() as conn:
            conn.execute(table.insert(), rows)

        with engine.connect() as conn:
            got = conn.execute(sa.select(table).order_by(table.c.id)).mappings().all()
        assert [dict(r) for r in got] == rows  # exact decimals, 4-byte UTF-8

        # A failing transaction changes nothing (InnoDB, not a non-transactional engine).
        def insert_new_then_duplicate() -> None:
            with engine.begin() as conn:
                conn.execute(table.insert(), {"id": 3, "owner": "carol", "amount": Decimal(1)})
                conn.execute(table.insert(), {"id": 1, "owner": "dup", "amount": Decimal(1)})

        with pytest.raises(IntegrityError):
            insert_new_then_duplicate()
        with engine.connect() as conn:
            ids = conn.execute(sa.select(table.c.id).order_by(table.c.id)).scalars().all()
        assert ids == [1, 2]
    finally:
        metadata.drop_all(engine)
