"""Which controller sweeps which agents: groups of agents, each claimed with a database lock for a round.

The sweep splits the agents into :data:`SWEEP_GROUPS` groups by a hash of their id. On PostgreSQL a
sweeper claims a group with a session advisory lock (``pg_try_advisory_lock(PG_SWEEP_LOCK, group)``)
on a connection of its own and keeps it until its next round begins. While one controller holds a
group no other sweeps it, so every group is swept once a round however many replicas run, and a
replica that falls behind leaves the groups it has not reached to the others. A controller that stops
or dies frees its groups: the database ends its session.

On SQLite one process sweeps at a time (a lock in the process): SQLite serves one controller host.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

SWEEP_GROUPS = 64
# First key of the two-key advisory locks that claim a group ("CGsw" in ASCII); the group is the second.
PG_SWEEP_LOCK = 0x4347_7377
_SQLITE_SWEEP = threading.Lock()


def sweep_group(agent_id: str) -> int:
    """The group an agent is swept with (stable across processes and hosts)."""
    return zlib.crc32(agent_id.encode("utf-8")) % SWEEP_GROUPS


class Claim(Protocol):
    def __call__(self, group: int) -> bool: ...


class SweepClaims:
    """The groups one controller process claims, round after round."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._connection: Connection | None = None
        self._busy = threading.Lock()

    @contextmanager
    def round(self) -> Iterator[Claim | None]:
        """A new round: frees the groups of the previous one and yields ``claim(group)``, which says whether
        this process may sweep ``group`` now; yields ``None`` when this process is sweeping already."""
        if not self._busy.acquire(blocking=False):
            yield None
            return
        try:
            if self._engine.dialect.name != "postgresql":
                with self._sqlite_round() as claim:
                    yield claim
                return
            self._execute("SELECT pg_advisory_unlock_all()")
            yield self._claim
        finally:
            self._busy.release()

    def close(self) -> None:
        """Free every group this process holds (also done by the database when the process ends)."""
        with self._busy:
            if self._connection is None:
                return
            try:
                self._execute("SELECT pg_advisory_unlock_all()")
            finally:
                if self._connection is not None:
                    self._connection.close()
                    self._connection = None

    @contextmanager
    def _sqlite_round(self) -> Iterator[Claim | None]:
        if not _SQLITE_SWEEP.acquire(blocking=False):
            yield None
            return
        try:
            yield lambda group: True
        finally:
            _SQLITE_SWEEP.release()

    def _claim(self, group: int) -> bool:
        return bool(self._execute("SELECT pg_try_advisory_lock(:lock, :group)", lock=PG_SWEEP_LOCK, group=group))

    def _execute(self, statement: str, **parameters: int) -> object:
        """Run ``statement`` on the claims connection; a broken connection is dropped (its locks died with it)."""
        if self._connection is None:
            self._connection = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            return self._connection.execute(text(statement), parameters).scalar()
        except DBAPIError:
            self._connection.invalidate()
            self._connection.close()
            self._connection = None
            raise
