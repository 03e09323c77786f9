"""The agent's SQLite outbox: every fact is numbered and committed here before anything is sent.

A fact goes in with :meth:`Outbox.put`, which assigns the next sequence number and commits in one
transaction. The counter lives in the ``meta`` table and is updated in that same transaction, so
sequence numbers strictly increase and never repeat, across restarts, crashes and an emptied table.
The transport reads :meth:`Outbox.head`, sends it, and calls :meth:`Outbox.acknowledge` only after
the controller answered. Facts the controller rejects as invalid are moved aside
(:meth:`Outbox.set_aside`); when the outbox is full, heartbeats go first, then the oldest other
facts. Either way an ``OutboxNotice`` fact is queued so the controller learns what happened; it
carries running totals since the outbox was created (``set_aside`` and ``dropped`` per kind, the
kind being the ``Fact.kind`` field name, or ``heartbeat`` for power heartbeats), so a receiver keeps
the latest notice. At most one notice waits in the outbox: a newer one replaces it.

The database runs in WAL mode with ``synchronous=FULL`` because a counter PC can lose power at the
plug. Thread safety: one :class:`Outbox` holds one connection and serialises every call with a lock,
so the collector and transport threads share it; other processes (``counterguard-agent status``)
may open the same file at the same time.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf.message import DecodeError, Message

from agent.clock import Clock, utc_now
from agent.errors import OutboxError
from protos.counterguard.v1 import facts_pb2

_KIND_FIELDS: dict[str, str] = {  # message type -> the Fact.kind field that holds it
    f.message_type.full_name: f.name
    for f in facts_pb2.Fact.DESCRIPTOR.oneofs_by_name["kind"].fields
    if f.message_type is not None
}
HEARTBEAT = "heartbeat"
NOTICE = "outbox_notice"
SET_ASIDE_KEEP = 1000  # rows kept in the set_aside table, newest first
_NEXT_SEQUENCE = "next_sequence"
_SET_ASIDE_TOTAL = "set_aside_total"
_SET_ASIDE_REASON = "set_aside_reason"
_DROPPED_PREFIX = "dropped."

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS facts (
    sequence INTEGER PRIMARY KEY, kind TEXT NOT NULL, observed_at TEXT NOT NULL,
    size INTEGER NOT NULL, data BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS facts_kind ON facts (kind, sequence);
CREATE TABLE IF NOT EXISTS set_aside (
    sequence INTEGER PRIMARY KEY, kind TEXT NOT NULL, observed_at TEXT NOT NULL,
    set_aside_at TEXT NOT NULL, reason TEXT NOT NULL, data BLOB NOT NULL);
"""


@dataclass(frozen=True)
class OutboxStats:
    """What ``status`` shows about the outbox."""

    depth: int
    oldest_sequence: int | None
    oldest_observed_at: dt.datetime | None
    next_sequence: int
    set_aside: int
    set_aside_reason: str
    dropped: dict[str, int] = field(default_factory=dict)


def kind_label(fact: facts_pb2.Fact) -> str:
    """The kind a fact is counted under: its ``kind`` field name, or ``heartbeat`` for power heartbeats."""
    kind = fact.WhichOneof("kind") or ""
    if kind == "power" and fact.power.kind == facts_pb2.PowerEvent.KIND_HEARTBEAT:
        return HEARTBEAT
    return kind


def _utc(moment: dt.datetime) -> dt.datetime:
    if moment.tzinfo is None:
        raise OutboxError(f"observed_at {moment.isoformat()} has no time zone; the agent records UTC instants")
    return moment.astimezone(dt.UTC)


class Outbox:
    """A durable, bounded queue of numbered facts in one SQLite file."""

    def __init__(self, path: Path, *, max_facts: int = 200_000, clock: Clock = utc_now) -> None:
        self.path = Path(path)
        self.max_facts = max_facts
        self._clock = clock
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise OutboxError(f"{self.path}: cannot open the outbox database ({exc})") from None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction under the lock; rolled back if anything inside fails."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise OutboxError(f"{self.path}: the outbox database failed ({exc})") from None

    # ------------------------------------------------------------------ meta

    def _get(self, db: sqlite3.Connection, key: str) -> str | None:
        row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _set(self, db: sqlite3.Connection, key: str, value: object) -> None:
        db.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                   (key, str(value)))

    def _int(self, db: sqlite3.Connection, key: str, default: int = 0) -> int:
        value = self._get(db, key)
        return default if value is None else int(value)

    def get_meta(self, key: str) -> str | None:
        """A small piece of agent state (e.g. ``boot_time``, ``last_report_at``), or None."""
        with self._lock:
            return self._get(self._db, key)

    def set_meta(self, key: str, value: str) -> None:
        with self._transaction() as db:
            self._set(db, key, value)

    # ----------------------------------------------------------------- writes

    def put(self, message: Message, observed_at: dt.datetime | None = None,
            *, meta: Mapping[str, str] | None = None) -> int:
        """Number ``message`` (a ``Fact`` kind) and commit it, with ``meta`` updates, in one transaction."""
        return self.put_many([message], observed_at, meta=meta)[0]

    def put_many(self, messages: Sequence[Message], observed_at: dt.datetime | None = None,
                 *, meta: Mapping[str, str] | None = None) -> list[int]:
        """Number and commit several facts in one transaction; returns their sequence numbers."""
        when = observed_at or self._clock()
        facts = [self._wrap(message, when) for message in messages]
        with self._transaction() as db:
            sequences = [self._insert(db, fact) for fact in facts]
            for key, value in (meta or {}).items():
                self._set(db, key, value)
            self._enforce_bound(db)
        return sequences

    def _wrap(self, message: Message, when: dt.datetime) -> facts_pb2.Fact:
        name = _KIND_FIELDS.get(message.DESCRIPTOR.full_name)
        if name is None:
            raise OutboxError(f"a {message.DESCRIPTOR.full_name} is not a kind of Fact")
        fact = facts_pb2.Fact()
        getattr(fact, name).CopyFrom(message)
        fact.observed_at.FromDatetime(_utc(when))
        return fact

    def _insert(self, db: sqlite3.Connection, fact: facts_pb2.Fact) -> int:
        sequence = self._int(db, _NEXT_SEQUENCE, 1)
        fact.sequence = sequence
        data = fact.SerializeToString()
        db.execute("INSERT INTO facts (sequence, kind, observed_at, size, data) VALUES (?, ?, ?, ?, ?)",
                   (sequence, kind_label(fact), fact.observed_at.ToDatetime(dt.UTC).isoformat(), len(data), data))
        self._set(db, _NEXT_SEQUENCE, sequence + 1)
        return sequence

    def _enforce_bound(self, db: sqlite3.Connection) -> None:
        """Drop heartbeats, then the oldest other facts, until the facts and one notice fit ``max_facts``."""
        depth = db.execute("SELECT COUNT(*) FROM facts").fetchone()[0]
        if depth <= self.max_facts:
            return
        has_notice = db.execute("SELECT 1 FROM facts WHERE kind = ? LIMIT 1", (NOTICE,)).fetchone() is not None
        excess = depth - self.max_facts + (0 if has_notice else 1)
        victims = db.execute("SELECT sequence, kind FROM facts WHERE kind = ? ORDER BY sequence LIMIT ?",
                             (HEARTBEAT, excess)).fetchall()
        if len(victims) < excess:
            victims += db.execute("SELECT sequence, kind FROM facts WHERE kind NOT IN (?, ?) ORDER BY sequence LIMIT ?",
                                  (HEARTBEAT, NOTICE, excess - len(victims))).fetchall()
        db.executemany("DELETE FROM facts WHERE sequence = ?", [(seq,) for seq, _ in victims])
        for kind in {kind for _, kind in victims}:
            key = _DROPPED_PREFIX + kind
            self._set(db, key, self._int(db, key) + sum(1 for _, k in victims if k == kind))
        self._enqueue_notice(db)

    def _enqueue_notice(self, db: sqlite3.Connection) -> None:
        """Replace any waiting notice with one carrying the current totals."""
        notice = facts_pb2.OutboxNotice(
            set_aside=self._int(db, _SET_ASIDE_TOTAL),
            dropped=self._dropped(db),
            reason=self._get(db, _SET_ASIDE_REASON) or "",
        )
        db.execute("DELETE FROM facts WHERE kind = ?", (NOTICE,))
        self._insert(db, self._wrap(notice, self._clock()))

    def _dropped(self, db: sqlite3.Connection) -> dict[str, int]:
        rows = db.execute("SELECT key, value FROM meta WHERE key LIKE ?", (_DROPPED_PREFIX + "%",)).fetchall()
        return {key[len(_DROPPED_PREFIX):]: int(value) for key, value in rows}

    # ------------------------------------------------------------ delivery

    def head(self, max_facts: int, max_bytes: int) -> list[facts_pb2.Fact]:
        """The oldest facts in sequence order, at most ``max_facts`` and ``max_bytes`` (but at least one)."""
        batch: list[facts_pb2.Fact] = []
        total = 0
        with self._lock:
            rows = self._db.execute("SELECT sequence, size, data FROM facts ORDER BY sequence LIMIT ?", (max_facts,))
            for sequence, size, data in rows:
                if batch and total + size > max_bytes:
                    break
                batch.append(self._parse(sequence, data))
                total += size
        return batch

    def _parse(self, sequence: int, data: bytes) -> facts_pb2.Fact:
        try:
            return facts_pb2.Fact.FromString(data)
        except DecodeError:
            raise OutboxError(f"{self.path}: fact {sequence} is corrupt and cannot be decoded") from None

    def acknowledge(self, sequence: int) -> int:
        """Delete every fact numbered up to ``sequence`` (the controller holds them); returns how many."""
        with self._transaction() as db:
            return db.execute("DELETE FROM facts WHERE sequence <= ?", (sequence,)).rowcount

    def set_aside(self, facts: Iterable[facts_pb2.Fact], reason: str) -> int:
        """Move facts the controller rejected to the ``set_aside`` table and queue a notice; returns how many moved."""
        sequences = [(fact.sequence,) for fact in facts]
        now = _utc(self._clock()).isoformat()
        with self._transaction() as db:
            kinds = {row[0] for seq in sequences
                     for row in db.execute("SELECT kind FROM facts WHERE sequence = ?", seq)}
            db.executemany("INSERT OR REPLACE INTO set_aside (sequence, kind, observed_at, set_aside_at, reason, data) "
                           "SELECT sequence, kind, observed_at, ?, ?, data FROM facts WHERE sequence = ?",
                           [(now, reason, seq) for (seq,) in sequences])
            moved = sum(db.execute("DELETE FROM facts WHERE sequence = ?", seq).rowcount for seq in sequences)
            db.execute("DELETE FROM set_aside WHERE sequence NOT IN "
                       "(SELECT sequence FROM set_aside ORDER BY sequence DESC LIMIT ?)", (SET_ASIDE_KEEP,))
            self._set(db, _SET_ASIDE_TOTAL, self._int(db, _SET_ASIDE_TOTAL) + moved)
            self._set(db, _SET_ASIDE_REASON, reason)
            if moved and kinds != {NOTICE}:  # a rejected notice alone gets no new notice: no endless loop
                self._enqueue_notice(db)
        return moved

    def renumber(self, sequences: Collection[int], above: int) -> int:
        """Give the waiting facts ``sequences`` new numbers above ``above`` (and above every number
        assigned so far), in their order, and continue counting from there.

        Used when the controller holds other facts under these numbers (this outbox's numbering went
        back: restored from an older copy, or the state folder was reset but the enrolment kept):
        sent under their old numbers they would never be stored.
        """
        wanted = sorted(set(sequences))
        with self._transaction() as db:
            next_sequence = max(self._int(db, _NEXT_SEQUENCE, 1), above + 1)
            moved = 0
            for old in wanted:
                row = db.execute("SELECT data FROM facts WHERE sequence = ?", (old,)).fetchone()
                if row is None:
                    continue
                fact = self._parse(old, row[0])
                fact.sequence = next_sequence
                db.execute("UPDATE facts SET sequence = ?, data = ? WHERE sequence = ?",
                           (next_sequence, fact.SerializeToString(), old))
                next_sequence, moved = next_sequence + 1, moved + 1
            self._set(db, _NEXT_SEQUENCE, next_sequence)
        return moved

    def skip_past(self, sequence: int) -> None:
        """Assign future facts numbers above ``sequence`` (the controller holds numbers up to it)."""
        with self._transaction() as db:
            self._set(db, _NEXT_SEQUENCE, max(self._int(db, _NEXT_SEQUENCE, 1), sequence + 1))

    # -------------------------------------------------------------- reading

    def depth(self) -> int:
        """How many facts wait to be delivered."""
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM facts").fetchone()[0])

    def last_sequence(self) -> int:
        """The highest sequence number ever assigned (0 before the first fact)."""
        with self._lock:
            return self._int(self._db, _NEXT_SEQUENCE, 1) - 1

    def stats(self) -> OutboxStats:
        """Depth, the oldest waiting fact, the next sequence number, set-aside and dropped totals."""
        with self._lock:
            db = self._db
            depth = int(db.execute("SELECT COUNT(*) FROM facts").fetchone()[0])
            oldest = db.execute("SELECT sequence, observed_at FROM facts ORDER BY sequence LIMIT 1").fetchone()
            return OutboxStats(
                depth=depth,
                oldest_sequence=None if oldest is None else int(oldest[0]),
                oldest_observed_at=None if oldest is None else dt.datetime.fromisoformat(oldest[1]),
                next_sequence=self._int(db, _NEXT_SEQUENCE, 1),
                set_aside=self._int(db, _SET_ASIDE_TOTAL),
                set_aside_reason=self._get(db, _SET_ASIDE_REASON) or "",
                dropped=self._dropped(db),
            )
