"""The read models: users and keys, accounts, balances, orders, fills, trades, ledger, candles.

Revision ID: 0001
Revises:
Create Date: 2026-11-25 22:20:57.477411
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("account_id", sa.String(length=36), nullable=False),
        sa.Column("owner", sa.String(length=128), nullable=False),
        sa.Column("opened_at", mysql.DATETIME(fsp=6), nullable=False),
        sa.PrimaryKeyConstraint("account_id"),
        sa.UniqueConstraint("owner"),
    )
    op.create_table(
        "aggregate_versions",
        sa.Column("aggregate_id", sa.String(length=36), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("aggregate_id"),
        comment="The last applied version of each aggregate (an event at or below it is a "
        "duplicate).",
    )
    op.create_table(
        "api_keys",
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=36), nullable=False),
        sa.Column("permissions", sa.String(length=64), nullable=False, comment="comma-separated"),
        sa.Column("label", sa.String(length=100), nullable=False),
        sa.Column("created_at", mysql.DATETIME(fsp=6), nullable=False),
        sa.Column("revoked_at", mysql.DATETIME(fsp=6), nullable=True),
        sa.PrimaryKeyConstraint("key_id"),
    )
    op.create_index(op.f("ix_api_keys_user_id"), "api_keys", ["user_id"], unique=False)
    op.create_table(
        "balances",
        sa.Column("account_id", sa.String(length=36), nullable=False),
        sa.Column("asset", sa.String(length=16), nullable=False),
        sa.Column("available", sa.Numeric(precision=40, scale=18), nullable=False),
        sa.Column("locked", sa.Numeric(precision=40, scale=18), nullable=False),
        sa.Column("updated_at", mysql.DATETIME(fsp=6), nullable=False),
        sa.PrimaryKeyConstraint("account_id", "asset"),
    )
    op.create_table(
        "candles",
        sa.Column("symbol", sa.String(length=32), nullable=False),
        sa.Column("interval", sa.String(length=3), nullable=False),
        sa.Column("open_time", mysql.DATETIME(), nullable=False),
        sa.Column("open", sa.Numeric(precision=40, scale=18), nullable=False),
        sa.Column("high", sa.Numeric(precision=40, scale=18), nullable=False),
        sa.Column("low", sa.Numeric(precision=40, scale=18), nullable=False),
        sa.Column("close", sa.Numeric(precision=40, scale=18), nullable=False),
        sa.Column("volume", sa.Numeric(precision=40, scale=18), nullable=False),
        sa.Column("quote_volume", sa.Numeric(precision=40, scale=18), nullable=False),
        sa.Column("trades", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("symbol", "interval", "open_time"),
    )
    op.create_table(
        "fills",
        sa.Column("trade_id", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=5), nullable=False, comment="maker or taker"),
        sa.Column("account_id", sa.String(length=36), nullable=False),
        sa.Column("order_id", sa.String(length=36), nullable=False),
        sa.Column("symbol", sa.String(length=32), nullable=False),
        sa.Column("side", sa.String(length=4), nullable=False),
        sa.Column("price", sa.Numeric(precision=40, scale=18), nullable=False),
        sa.Column("quantity", sa.Numeric(precision=40, scale=18), nullable=False),
        sa.Column("spent_asset", sa.String(length=16), nullable=False),
        sa.Column("spent", sa.Numeric(precision=40, scale=18), nullable=False),
        sa.Column("received_asset", sa.String(length=16), nullable=False),
        sa.Column("received", sa.Numeric(precision=40, scale=18), nullable=False),
        sa.Column("fee", sa.Numeric(precision=40, scale=18), nullable=False),
        sa.Column("at", mysql.DATETIME(fsp=6), nullable=False),
        sa.PrimaryKeyConstraint("trade_id", "role"),
    )
    op.create_index("ix_fills_account_at", "fills", ["account_id", "at", "trade_id"], unique=False)
    op.create_index("ix_fills_order", "fills", ["order_id"], unique=False)
    op.create_table(
        "ledger_entries",
        sa.Column(
            "event_id",
            sa.String(length=36),
            nullable=False,
            comment="the account event's aggregate id",
        ),
        sa.Column("event_version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("leg", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column(
            "ledger_account", sa.String(length=64), nullable=False, comment="account id or system"
        ),
        sa.Column(
            "bucket", sa.String(length=16), nullable=False, comment="available, locked or ''"
        ),
        sa.Column("asset", sa.String(length=16), nullable=False),
        sa.Column(
            "amount",
            sa.Numeric(precision=40, scale=18),
            nullable=False,
            comment="positive in, negative out",
        ),
        sa.Column("kind", sa.String(length=32), nullable=False, comment="the event's name"),
        sa.Column(
            "reference",
            sa.String(length=64),
            nullable=False,
            comment="order, trade, tx or withdrawal",
        ),
        sa.Column("at", mysql.DATETIME(fsp=6), nullable=False),
        sa.PrimaryKeyConstraint("event_id", "event_version", "leg"),
    )
    op.create_index(
        "ix_ledger_account_at",
        "ledger_entries",
        ["ledger_account", "at", "event_version"],
        unique=False,
    )
    op.create_table(
        "orders",
        sa.Column("order_id", sa.String(length=36), nullable=False),
        sa.Column("account_id", sa.String(length=36), nullable=False),
        sa.Column("symbol", sa.String(length=32), nullable=False),
        sa.Column("side", sa.String(length=4), nullable=False),
        sa.Column("type", sa.String(length=8), nullable=False),
        sa.Column("price", sa.Numeric(precision=40, scale=18), nullable=True),
        sa.Column("quantity", sa.Numeric(precision=40, scale=18), nullable=True),
        sa.Column("quote_quantity", sa.Numeric(precision=40, scale=18), nullable=True),
        sa.Column("time_in_force", sa.String(length=3), nullable=False),
        sa.Column("post_only", sa.Boolean(), nullable=False),
        sa.Column("stp", sa.String(length=16), nullable=False),
        sa.Column("client_order_id", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=True),
        sa.Column("filled_quantity", sa.Numeric(precision=40, scale=18), nullable=False),
        sa.Column("filled_notional", sa.Numeric(precision=40, scale=18), nullable=False),
        sa.Column("remaining", sa.Numeric(precision=40, scale=18), nullable=True),
        sa.Column("created_at", mysql.DATETIME(fsp=6), nullable=False),
        sa.Column("updated_at", mysql.DATETIME(fsp=6), nullable=False),
        sa.PrimaryKeyConstraint("order_id"),
    )
    op.create_index(
        "ix_orders_account_client", "orders", ["account_id", "client_order_id"], unique=False
    )
    op.create_index(
        "ix_orders_account_created",
        "orders",
        ["account_id", "created_at", "order_id"],
        unique=False,
    )
    op.create_index("ix_orders_account_status", "orders", ["account_id", "status"], unique=False)
    op.create_table(
        "projection_offsets",
        sa.Column("projection", sa.String(length=64), nullable=False),
        sa.Column("topic", sa.String(length=200), nullable=False),
        sa.Column("partition", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("next_offset", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("projection", "topic", "partition"),
        comment="Per projection and partition, the next offset to apply: written in the "
        "same transaction as what it applied.",
    )
    op.create_table(
        "trades",
        sa.Column("trade_id", sa.String(length=64), nullable=False),
        sa.Column("symbol", sa.String(length=32), nullable=False),
        sa.Column(
            "seq", sa.BigInteger(), nullable=False, comment="the market's trade sequence number"
        ),
        sa.Column("price", sa.Numeric(precision=40, scale=18), nullable=False),
        sa.Column("quantity", sa.Numeric(precision=40, scale=18), nullable=False),
        sa.Column("taker_side", sa.String(length=4), nullable=False),
        sa.Column("taker_order_id", sa.String(length=36), nullable=False),
        sa.Column("maker_order_id", sa.String(length=36), nullable=False),
        sa.Column("at", mysql.DATETIME(fsp=6), nullable=False),
        sa.PrimaryKeyConstraint("trade_id"),
    )
    op.create_index("ix_trades_symbol_seq", "trades", ["symbol", "seq"], unique=True)
    op.create_table(
        "users",
        sa.Column("user_id", sa.String(length=36), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("account_id", sa.String(length=36), nullable=False),
        sa.Column("created_at", mysql.DATETIME(fsp=6), nullable=False),
        sa.PrimaryKeyConstraint("user_id"),
        sa.UniqueConstraint("email"),
    )


def downgrade() -> None:
    op.drop_table("users")
    op.drop_index("ix_trades_symbol_seq", table_name="trades")
    op.drop_table("trades")
    op.drop_table("projection_offsets")
    op.drop_index("ix_orders_account_status", table_name="orders")
    op.drop_index("ix_orders_account_created", table_name="orders")
    op.drop_index("ix_orders_account_client", table_name="orders")
    op.drop_table("orders")
    op.drop_index("ix_ledger_account_at", table_name="ledger_entries")
    op.drop_table("ledger_entries")
    op.drop_index("ix_fills_order", table_name="fills")
    op.drop_index("ix_fills_account_at", table_name="fills")
    op.drop_table("fills")
    op.drop_table("candles")
    op.drop_table("balances")
    op.drop_index(op.f("ix_api_keys_user_id"), table_name="api_keys")
    op.drop_table("api_keys")
    op.drop_table("aggregate_versions")
    op.drop_table("accounts")
