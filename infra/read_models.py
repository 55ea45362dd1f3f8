"""The MySQL read models: one schema, written by projections, read by the gateways.

Every table here is a projection of the event topics and can be dropped and
rebuilt from them. Alembic migrations (``infra/migrations``) create it; this
module is what code imports to read and write it (SQLAlchemy 2 Core).

Amounts are ``DECIMAL(40, 18)``: wide enough for any asset's scale and for
MAX_UNITS; each value is written at its asset's scale, as the events carry it.
Ids are the aggregates' UUIDs as 36-character strings. Times are the events'
stamped times (UTC, microseconds).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
)
from sqlalchemy.dialects import mysql

metadata = MetaData()

Amount = Numeric(40, 18, asdecimal=True)
Id = String(36)
Moment = mysql.DATETIME(fsp=6)

projection_offsets = Table(
    "projection_offsets",
    metadata,
    Column("projection", String(64), primary_key=True),
    Column("topic", String(200), primary_key=True),
    Column("partition", Integer, primary_key=True, autoincrement=False),
    Column("next_offset", BigInteger, nullable=False),
    comment="Per projection and partition, the next offset to apply: written in the "
    "same transaction as what it applied.",
)

aggregate_versions = Table(
    "aggregate_versions",
    metadata,
    Column("aggregate_id", Id, primary_key=True),
    Column("version", Integer, nullable=False),
    comment="The last applied version of each aggregate (an event at or below it is a duplicate).",
)

users = Table(
    "users",
    metadata,
    Column("user_id", Id, primary_key=True),
    Column("email", String(254), nullable=False, unique=True),
    Column("password_hash", String(255), nullable=False),
    Column("role", String(16), nullable=False),
    Column("account_id", Id, nullable=False),
    Column("created_at", Moment, nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("key_id", String(64), primary_key=True),
    Column("user_id", Id, nullable=False, index=True),
    Column("permissions", String(64), nullable=False, comment="comma-separated"),
    Column("label", String(100), nullable=False, default=""),
    Column("created_at", Moment, nullable=False),
    Column("revoked_at", Moment, nullable=True),
)

accounts = Table(
    "accounts",
    metadata,
    Column("account_id", Id, primary_key=True),
    Column("owner", String(128), nullable=False, unique=True),
    Column("opened_at", Moment, nullable=False),
)

balances = Table(
    "balances",
    metadata,
    Column("account_id", Id, primary_key=True),
    Column("asset", String(16), primary_key=True),
    Column("available", Amount, nullable=False),
    Column("locked", Amount, nullable=False),
    Column("updated_at", Moment, nullable=False),
)

orders = Table(
    "orders",
    metadata,
    Column("order_id", Id, primary_key=True),
    Column("account_id", Id, nullable=False),
    Column("symbol", String(32), nullable=False),
    Column("side", String(4), nullable=False),
    Column("type", String(8), nullable=False),
    Column("price", Amount, nullable=True),
    Column("quantity", Amount, nullable=True),
    Column("quote_quantity", Amount, nullable=True),
    Column("time_in_force", String(3), nullable=False),
    Column("post_only", Boolean, nullable=False),
    Column("stp", String(16), nullable=False),
    Column("client_order_id", String(64), nullable=True),
    Column("status", String(20), nullable=False),
    Column("reason", String(64), nullable=True),
    Column("filled_quantity", Amount, nullable=False),
    Column("filled_notional", Amount, nullable=False),
    Column("remaining", Amount, nullable=True),
    Column("created_at", Moment, nullable=False),
    Column("updated_at", Moment, nullable=False),
    Index("ix_orders_account_created", "account_id", "created_at", "order_id"),
    Index("ix_orders_account_status", "account_id", "status"),
    Index("ix_orders_account_client", "account_id", "client_order_id"),
)

fills = Table(
    "fills",
    metadata,
    Column("trade_id", String(64), primary_key=True),
    Column("role", String(5), primary_key=True, comment="maker or taker"),
    Column("account_id", Id, nullable=False),
    Column("order_id", Id, nullable=False),
    Column("symbol", String(32), nullable=False),
    Column("side", String(4), nullable=False),
    Column("price", Amount, nullable=False),
    Column("quantity", Amount, nullable=False),
    Column("spent_asset", String(16), nullable=False),
    Column("spent", Amount, nullable=False),
    Column("received_asset", String(16), nullable=False),
    Column("received", Amount, nullable=False),
    Column("fee", Amount, nullable=False),
    Column("at", Moment, nullable=False),
    Index("ix_fills_account_at", "account_id", "at", "trade_id"),
    Index("ix_fills_order", "order_id"),
)

markets = Table(
    "markets",
    metadata,
    Column("symbol", String(32), primary_key=True),
    Column("base", String(12), nullable=False),
    Column("base_scale", Integer, nullable=False),
    Column("quote", String(12), nullable=False),
    Column("quote_scale", Integer, nullable=False),
    Column("tick_size", Amount, nullable=False),
    Column("lot_size", Amount, nullable=False),
    Column("min_quantity", Amount, nullable=False),
    Column("max_quantity", Amount, nullable=False),
    Column("min_notional", Amount, nullable=False),
    Column("maker_fee", Amount, nullable=False),
    Column("taker_fee", Amount, nullable=False),
    Column("listed_at", Moment, nullable=False),
    comment="One row per TradeTape.Listed: the markets the log lists, and their rules.",
)

trades = Table(
    "trades",
    metadata,
    Column("trade_id", String(64), primary_key=True),
    Column("symbol", String(32), nullable=False),
    Column("seq", BigInteger, nullable=False, comment="the market's trade sequence number"),
    Column("price", Amount, nullable=False),
    Column("quantity", Amount, nullable=False),
    Column("taker_side", String(4), nullable=False),
    Column("taker_order_id", Id, nullable=False),
    Column("maker_order_id", Id, nullable=False),
    Column("at", Moment, nullable=False),
    Index("ix_trades_symbol_seq", "symbol", "seq", unique=True),
)

ledger_entries = Table(
    "ledger_entries",
    metadata,
    Column("event_id", Id, primary_key=True, comment="the account event's aggregate id"),
    Column("event_version", Integer, primary_key=True, autoincrement=False),
    Column("leg", Integer, primary_key=True, autoincrement=False),
    Column("ledger_account", String(64), nullable=False, comment="account id or system"),
    Column("bucket", String(16), nullable=False, comment="available, locked or ''"),
    Column("asset", String(16), nullable=False),
    Column("amount", Amount, nullable=False, comment="positive in, negative out"),
    Column("kind", String(32), nullable=False, comment="the event's name"),
    Column("reference", String(64), nullable=False, comment="order, trade, tx or withdrawal"),
    Column("at", Moment, nullable=False),
    Index("ix_ledger_account_at", "ledger_account", "at", "event_version"),
)

CANDLE_INTERVALS = ("1m", "5m", "15m", "1h", "4h", "1d")

candles = Table(
    "candles",
    metadata,
    Column("symbol", String(32), primary_key=True),
    Column("interval", String(3), primary_key=True),
    Column("open_time", mysql.DATETIME(), primary_key=True),
    Column("open", Amount, nullable=False),
    Column("high", Amount, nullable=False),
    Column("low", Amount, nullable=False),
    Column("close", Amount, nullable=False),
    Column("volume", Amount, nullable=False),
    Column("quote_volume", Amount, nullable=False),
    Column("trades", Integer, nullable=False),
)
