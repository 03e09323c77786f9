"""Schema migrations: an empty database of either back end migrates to exactly what the models say."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, Integer, MetaData, event, inspect, text
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel

import controller.models  # noqa: F401  (the tables the migrations must produce)
from controller.db import make_engine
from controller.migrate import SchemaError, alembic_config, current_revision, head_revision, upgrade


def _differences(engine: Engine, metadata: MetaData) -> list[object]:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
        return list(compare_metadata(context, metadata))


@contextmanager
def _statements(engine: Engine) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:  # type: ignore[no-untyped-def]
        seen.append(statement.strip().split()[0].upper())

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def test_upgrade_empty_database_gives_the_model_schema(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        assert current_revision(engine) is None

        upgrade(engine)

        assert current_revision(engine) == head_revision()
        assert _differences(engine, SQLModel.metadata) == []
        assert {"enrollment_token", "agent", "fact", "policy_version", "policy_activation"} <= set(SQLModel.metadata.tables)
        assert set(inspect(engine).get_table_names()) == {"alembic_version", *SQLModel.metadata.tables}
    finally:
        engine.dispose()


def test_the_comparison_does_see_a_difference(engine: Engine) -> None:
    """Guards the test above: a model the migrations do not produce is reported."""
    changed = MetaData()
    for table in SQLModel.metadata.tables.values():
        table.to_metadata(changed)
    changed.tables["fact"].append_column(Column("extra", Integer, nullable=True))

    differences = _differences(engine, changed)

    assert [(d[0], d[3].name) for d in differences if isinstance(d, tuple)] == [("add_column", "extra")]  # type: ignore[index,attr-defined]


def test_upgrade_again_changes_nothing(engine: Engine) -> None:
    with _statements(engine) as statements:
        upgrade(engine)
        upgrade(engine)

    assert current_revision(engine) == head_revision()
    assert not [s for s in statements if s in {"CREATE", "ALTER", "DROP", "INSERT", "UPDATE", "DELETE", "BEGIN"}]


_START = """
import sys, time
from controller.db import make_engine
from controller.migrate import upgrade
engine = make_engine(sys.argv[1])
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
upgrade(engine)
"""


def test_processes_starting_together_migrate_once(database_url: str) -> None:
    engine = make_engine(database_url)
    # Create the SQLite file (and switch it to WAL) first: several connections switching a brand-new
    # file to WAL at once can fail with "database is locked" in controller.db, before any migration.
    engine.connect().close()
    start_at = str(time.time() + 3)
    processes = [
        subprocess.Popen([sys.executable, "-c", _START, database_url, start_at], stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    try:
        failures = [p.stderr.read() for p in processes if p.wait(timeout=60) != 0]  # type: ignore[union-attr]
        assert failures == []
        assert current_revision(engine) == head_revision()
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar_one() == 1
        assert _differences(engine, SQLModel.metadata) == []
    finally:
        for process in processes:
            process.kill()
        engine.dispose()


def test_downgrade_to_nothing_and_back(engine: Engine) -> None:
    with engine.begin() as conn:
        command.downgrade(alembic_config(conn), "base")
    assert set(inspect(engine).get_table_names()) == {"alembic_version"}
    assert current_revision(engine) is None

    upgrade(engine)

    assert _differences(engine, SQLModel.metadata) == []


def test_a_schema_newer_than_the_code_is_refused(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))

    with pytest.raises(SchemaError, match="revision '9999', which this controller does not know"):
        upgrade(engine)
