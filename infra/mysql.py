"""SQLAlchemy 2 engines (PyMySQL driver) for the MySQL read models."""

from __future__ import annotations

from typing import Any

import sqlalchemy
from sqlalchemy.engine import Engine

from infra.settings import Settings


def create_engine(settings: Settings | None = None, **kwargs: Any) -> Engine:
    """An engine for the configured MySQL database.

    pool_pre_ping: a connection the server closed (restart, wait_timeout) is replaced
    instead of failing the next request. Extra keyword arguments go to SQLAlchemy.
    """
    settings = settings or Settings.from_env()
    options: dict[str, Any] = {"pool_pre_ping": True, "pool_recycle": 3600}
    options.update(kwargs)
    return sqlalchemy.create_engine(settings.mysql_url, **options)
