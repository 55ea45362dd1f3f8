"""Alembic environment: migrate the database ``infra.migrate`` hands in (online only)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from infra.read_models import metadata


def run_migrations(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=metadata, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is None:
    msg = "run migrations through infra.migrate (bitex migrate), which passes a connection"
    raise RuntimeError(msg)
run_migrations(connection)
