"""Shared fixtures: a database per back end (SQLite file and the real PostgreSQL), a clock, a PKI.

Storage tests take the ``engine`` fixture and run once per back end. PostgreSQL comes from
``$COUNTERGUARD_TEST_PG_URL`` (default: the local server, database ``postgres``); each test gets
a fresh database that is dropped afterwards. When PostgreSQL is unreachable those tests fail
with the reason: they never skip silently (``make test`` starts the server when it is down).
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url

from controller.clock import utc_now
from controller.config import Settings
from controller.db import make_engine
from controller.pki import ServerPKI, load_or_create_pki

PG_ADMIN_URL = os.environ.get("COUNTERGUARD_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


class FakeClock:
    """A settable clock: ``clock()`` returns the current instant, ``advance`` moves it."""

    def __init__(self, start: dt.datetime) -> None:
        self.now = start

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **delta: float) -> dt.datetime:
        self.now += dt.timedelta(**delta)
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(dt.datetime(2026, 11, 2, 1, 30, tzinfo=dt.UTC))  # a Monday, 09:30 in Shanghai



def _fresh_postgres_database() -> tuple[str, Engine]:
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"cg_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # the reason goes into the failure, never a skip
        pytest.fail(f"PostgreSQL at {PG_ADMIN_URL} is not usable ({exc.__class__.__name__}: {exc}); run `make test`, which starts it")
    return make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False), admin


def _drop_postgres_database(url: str, admin: Engine) -> None:
    name = make_url(url).database
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """The URL of a fresh, empty PostgreSQL database (dropped after the test)."""
    url, admin = _fresh_postgres_database()
    try:
        yield url
    finally:
        _drop_postgres_database(url, admin)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database on each back end in turn: a SQLite file, then the real PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'counterguard.db'}"
        return
    url, admin = _fresh_postgres_database()
    try:
        yield url
    finally:
        _drop_postgres_database(url, admin)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """A migrated database on each back end in turn."""
    from controller.migrate import upgrade

    eng = make_engine(database_url)
    upgrade(eng)
    try:
        yield eng
    finally:
        eng.dispose()


@pytest.fixture
def pki(tmp_path: Path) -> ServerPKI:
    """A CA and server certificate (for localhost and 127.0.0.1) made the way `serve` makes them.

    Made at the real time, not the test clock's: TLS checks certificates against the real clock.
    """
    return load_or_create_pki(Settings(data_dir=tmp_path / "controller"), utc_now())


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Commands run in-process (``serve``, the agent CLI) configure logging for a real process;
    put the root logger back so a handler bound to one test's captured stderr does not outlive it."""
    import logging

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
