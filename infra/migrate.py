"""Schema migrations of the MySQL read models (Alembic), run by ``make up`` and tests.

``bitex migrate`` brings the configured database to the newest revision;
``bitex migrate --database NAME`` migrates another one (tests use scratch
databases named ``<database>_<something>``, which the local runner lets the
BitEx user create).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text

from infra.mysql import create_engine
from infra.settings import Settings

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def upgrade(settings: Settings, revision: str = "head") -> None:
    _migrate(settings, command.upgrade, revision)


def downgrade(settings: Settings, revision: str = "base") -> None:
    _migrate(settings, command.downgrade, revision)


def _migrate(settings: Settings, step: Callable[[Config, str], None], revision: str) -> None:
    """Run an Alembic command on one connection, in one transaction."""
    engine = create_engine(settings)
    try:
        with engine.begin() as connection:
            config = _config()
            config.attributes["connection"] = connection
            step(config, revision)
    finally:
        engine.dispose()


def create_database(settings: Settings, database: str) -> Settings:
    """Create ``database`` (if missing) on the configured server, migrated; its Settings."""
    engine = create_engine(settings)
    try:
        with engine.begin() as connection:
            connection.execute(
                text(f"CREATE DATABASE IF NOT EXISTS `{database}` CHARACTER SET utf8mb4")
            )
    finally:
        engine.dispose()
    scratch = replace(settings, mysql_database=database)
    upgrade(scratch)
    return scratch


def drop_database(settings: Settings, database: str) -> None:
    engine = create_engine(settings)
    try:
        with engine.begin() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS `{database}`"))
    finally:
        engine.dispose()
