"""The store of applied policies: every version ever applied, which one is active, parsed once.

``apply`` validates a policy text before anything is written; an invalid text stores nothing. A
(policy id, version) is stored once and its content never changes: applying the same text again is
a no-op that says so, applying an older version again makes it active again (a roll back), and
applying changed text under a version already stored is refused. Each activation is a new row,
never an update, so any number of controllers can share the database.

``active`` is cheap to call often: one small query finds the newest activation, and the parsed
policy, its calendar and its catalogue matcher are cached by content hash. When the active version
cannot be used (its text no longer validates, e.g. written by a newer controller), the error is
logged once and the last good policy stays in force.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import logging
import threading
from dataclasses import dataclass, field
from typing import Any
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from controller.clock import Clock, utc_now
from controller.db import session_scope
from controller.errors import Conflict, NotFound
from controller.policy.calendar import WorkCalendar
from controller.policy.catalogue import CatalogueMatcher
from controller.policy.loader import PolicyError, load_policy_text, read_policy_file
from controller.policy.model import Policy
from controller.policy.records import POLICY_ACTIVATION, POLICY_VERSION, PolicyActivation, PolicyVersion

log = logging.getLogger(__name__)

_PARSED_CACHE = 8


def content_sha256(text: str) -> str:
    """The hash that identifies a policy text (of its UTF-8 bytes)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class PolicyRecord:
    """A stored policy version; in :meth:`PolicyStore.history`, one activation of it.

    ``applied_by``/``applied_at`` are who applied it and when (for a history row: that activation).
    ``unchanged`` is set by :meth:`PolicyStore.apply` when the text was already the active policy
    and nothing was stored.
    """

    id: int
    policy_id: str
    version: str
    sha256: str
    source: str
    applied_by: str
    applied_at: dt.datetime
    content: str = field(repr=False)
    active: bool = False
    unchanged: bool = False

    @property
    def label(self) -> str:
        """``<policy id>@<version>``: the version string agents see."""
        return f"{self.policy_id}@{self.version}"


@dataclass(frozen=True)
class LoadedPolicy:
    """An active policy ready to use: its record, the validated model, calendar and matcher."""

    record: PolicyRecord
    policy: Policy
    calendar: WorkCalendar
    matcher: CatalogueMatcher

    @property
    def version(self) -> str:
        return self.record.label


def _record(
    row: PolicyVersion, *, active: bool = False, by: str | None = None, at: dt.datetime | None = None
) -> PolicyRecord:
    assert row.id is not None
    return PolicyRecord(
        id=row.id,
        policy_id=row.policy_id,
        version=row.version,
        sha256=row.sha256,
        source=row.source,
        applied_by=row.applied_by if by is None else by,
        applied_at=row.applied_at if at is None else at,
        content=row.content,
        active=active,
    )


class PolicyStore:
    """Apply, list and load policy versions kept in the database."""

    def __init__(self, engine: Engine, clock: Clock = utc_now) -> None:
        self._engine = engine
        self._clock = clock
        self._lock = threading.Lock()
        self._parsed: dict[str, tuple[Policy, WorkCalendar, CatalogueMatcher]] = {}
        self._current: LoadedPolicy | None = None
        self._refused: set[str] = set()

    # ------------------------------------------------------------------ writing

    def apply(self, text: str, source: str, applied_by: str) -> PolicyRecord:
        """Validate ``text`` and make it the active policy; :class:`PolicyError` when it is invalid.

        Returns the stored version with ``unchanged=True`` when it was already active.
        Raises :class:`~controller.errors.Conflict` when its (id, version) was stored with other text.
        """
        policy = load_policy_text(text, source)
        try:
            return self._apply(policy, text, source, applied_by)
        except IntegrityError:
            # Another controller stored the same (id, version) at the same moment: it is there now.
            return self._apply(policy, text, source, applied_by)

    def _apply(self, policy: Policy, text: str, source: str, applied_by: str) -> PolicyRecord:
        sha = content_sha256(text)
        now = self._clock()
        with session_scope(self._engine) as session:
            row = session.scalars(
                select(PolicyVersion).where(
                    POLICY_VERSION.c.policy_id == policy.id, POLICY_VERSION.c.version == policy.version
                )
            ).first()
            if row is not None and row.sha256 != sha:
                raise Conflict(
                    f"policy {policy.id} version {policy.version} was already applied "
                    f"(by {row.applied_by or 'someone'} on {row.applied_at:%Y-%m-%d %H:%M} UTC) "
                    "with different content; "
                    "give the changed file a new version"
                )
            if row is not None and self._active_version_id(session) == row.id:
                return dataclasses.replace(_record(row, active=True), unchanged=True)
            if row is None:
                row = PolicyVersion(
                    policy_id=policy.id,
                    version=policy.version,
                    sha256=sha,
                    content=text,
                    source=source[-255:],
                    applied_by=applied_by[:128],
                    applied_at=now,
                )
                session.add(row)
                session.flush()
            assert row.id is not None
            session.add(PolicyActivation(policy_version_id=row.id, activated_by=applied_by[:128], activated_at=now))
            log.info("policy %s@%s applied by %s from %s", policy.id, policy.version, applied_by or "?", source)
            return _record(row, active=True, by=applied_by[:128], at=now)

    @staticmethod
    def _active_version_id(session: Any) -> int | None:
        statement = select(POLICY_ACTIVATION.c.policy_version_id).order_by(POLICY_ACTIVATION.c.id.desc()).limit(1)
        return session.scalar(statement)  # type: ignore[no-any-return]

    def ensure_default(self, default_path: str | Path, applied_by: str) -> PolicyRecord | None:
        """Apply the shipped default policy when no policy is active yet; returns it, or ``None``."""
        with session_scope(self._engine) as session:
            if self._active_version_id(session) is not None:
                return None
        path = Path(default_path)
        return self.apply(read_policy_file(path), path.name, applied_by)

    # ------------------------------------------------------------------ reading

    def history(self, limit: int | None = None) -> list[PolicyRecord]:
        """Every activation, newest first: which version, who applied it, when."""
        statement = (
            select(PolicyVersion, POLICY_ACTIVATION.c.activated_by, POLICY_ACTIVATION.c.activated_at)
            .join(POLICY_ACTIVATION, POLICY_ACTIVATION.c.policy_version_id == POLICY_VERSION.c.id)
            .order_by(POLICY_ACTIVATION.c.id.desc())
        )
        if limit is not None:
            statement = statement.limit(limit)
        with session_scope(self._engine) as session:
            rows = session.execute(statement).all()
        return [_record(row, active=index == 0, by=by, at=at) for index, (row, by, at) in enumerate(rows)]

    def get(self, policy_id: str, version: str) -> PolicyRecord:
        """One stored version; :class:`~controller.errors.NotFound` when it was never applied."""
        with session_scope(self._engine) as session:
            row = session.scalars(
                select(PolicyVersion).where(
                    POLICY_VERSION.c.policy_id == policy_id, POLICY_VERSION.c.version == version
                )
            ).first()
            active = row is not None and self._active_version_id(session) == row.id
        if row is None:
            raise NotFound(f"policy {policy_id} version {version} was never applied")
        return _record(row, active=active)

    def load(self, record: PolicyRecord) -> LoadedPolicy:
        """A stored version parsed (cached by content hash); :class:`PolicyError` if it no longer validates."""
        with self._lock:
            parsed = self._parsed.get(record.sha256)
            if parsed is None:
                policy = load_policy_text(record.content, f"{record.label} ({record.source})")
                parsed = (policy, WorkCalendar(policy), CatalogueMatcher(policy.catalogue))
                if len(self._parsed) >= _PARSED_CACHE:
                    self._parsed.pop(next(iter(self._parsed)))
                self._parsed[record.sha256] = parsed
        return LoadedPolicy(record, *parsed)

    def active(self) -> LoadedPolicy | None:
        """The active policy, ready to use; ``None`` before any was applied.

        If the newest version cannot be used, logs why (once) and keeps returning the last good one.
        """
        statement = (
            select(POLICY_ACTIVATION.c.id, POLICY_VERSION.c.id, POLICY_VERSION.c.sha256)
            .join(POLICY_VERSION, POLICY_ACTIVATION.c.policy_version_id == POLICY_VERSION.c.id)
            .order_by(POLICY_ACTIVATION.c.id.desc())
            .limit(1)
        )
        with self._engine.connect() as conn:
            head = conn.execute(statement).first()
        if head is None:
            return None
        _, version_id, sha = head
        current = self._current
        if current is not None and current.record.id == version_id and current.record.sha256 == sha:
            return current
        if sha in self._refused:
            return current
        with session_scope(self._engine) as session:
            row = session.get(PolicyVersion, version_id)
            record = _record(row, active=True) if row is not None else None
        if record is None:
            return current
        try:
            loaded = self.load(record)
        except PolicyError as exc:
            self._refused.add(sha)
            log.error("the active policy %s cannot be used, %s:\n%s", record.label, _kept(current), exc)
            return current
        except Exception:  # anything else wrong with it: the controller keeps running on the last good one
            self._refused.add(sha)
            log.exception("the active policy %s cannot be used, %s", record.label, _kept(current))
            return current
        if current is None or current.record.label != loaded.record.label:
            log.info("policy %s is active", loaded.record.label)
        self._current = loaded
        return loaded


def _kept(current: LoadedPolicy | None) -> str:
    return f"keeping {current.record.label}" if current else "no policy is in force"
