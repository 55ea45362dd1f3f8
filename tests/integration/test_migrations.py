"""The Alembic migrations build exactly the schema the code declares, and undo it."""

from __future__ import annotations

from sqlalchemy import inspect

from infra.migrate import downgrade, upgrade
from infra.mysql import create_engine
from infra.read_models import metadata
from infra.settings import Settings


def _columns(settings: Settings) -> dict[str, list[tuple[str, str, bool]]]:
    engine = create_engine(settings)
    try:
        inspector = inspect(engine)
        return {
            table: [
                (c["name"], str(c["type"]).split(" ")[0], bool(c["nullable"]))
                for c in inspector.get_columns(table)
            ]
            for table in inspector.get_table_names()
            if table != "alembic_version"
        }
    finally:
        engine.dispose()


def test_migrated_schema_matches_the_declared_tables(read_db: Settings) -> None:
    built = _columns(read_db)
    assert set(built) == set(metadata.tables)
    for name, table in metadata.tables.items():
        assert [c[0] for c in built[name]] == [c.name for c in table.columns], name
        assert [c[2] for c in built[name]] == [c.nullable for c in table.columns], name


def test_downgrade_removes_everything_and_upgrade_is_repeatable(read_db: Settings) -> None:
    downgrade(read_db)
    assert _columns(read_db) == {}
    upgrade(read_db)
    upgrade(read_db)
    assert set(_columns(read_db)) == set(metadata.tables)
