"""The listed markets: one row per ``TradeTape.Listed``.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 04:00:00.000000
"""

from __future__ import annotations

from decimal import Decimal

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _amount(name: str) -> sa.Column[Decimal]:
    return sa.Column(name, sa.Numeric(precision=40, scale=18), nullable=False)


def upgrade() -> None:
    op.create_table(
        "markets",
        sa.Column("symbol", sa.String(length=32), nullable=False),
        sa.Column("base", sa.String(length=12), nullable=False),
        sa.Column("base_scale", sa.Integer(), nullable=False),
        sa.Column("quote", sa.String(length=12), nullable=False),
        sa.Column("quote_scale", sa.Integer(), nullable=False),
        _amount("tick_size"),
        _amount("lot_size"),
        _amount("min_quantity"),
        _amount("max_quantity"),
        _amount("min_notional"),
        _amount("maker_fee"),
        _amount("taker_fee"),
        sa.Column("listed_at", mysql.DATETIME(fsp=6), nullable=False),
        sa.PrimaryKeyConstraint("symbol"),
        comment="One row per TradeTape.Listed: the markets the log lists, and their rules.",
    )


def downgrade() -> None:
    op.drop_table("markets")
