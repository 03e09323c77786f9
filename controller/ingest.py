"""Storing the facts an agent reports: validate the whole batch, then commit it once, idempotently.

This is the transport-free service behind the gRPC ``Report`` call. A batch is checked completely
before anything is written; a malformed fact rejects the whole batch with an
:class:`~controller.errors.InvalidInput` that names it. Storing is idempotent on
(agent id, sequence): facts already held are skipped, so a batch sent twice, or overlapping an
earlier one, stores each fact once. Batches of one agent are serialized by locking its row, so
controller replicas ingesting the same batch at the same moment agree on what was stored and on
the acknowledgement, which is the highest sequence held once the transaction has committed.

The agent's row keeps that highest sequence (``last_sequence``), so a live batch (every sequence
above it) needs no look at the facts already held. When the caller passes the fingerprint of the
certificate the agent presented, it is checked against the agent's row under the same lock: one
transaction both authenticates the batch and stores it.

Batches of different agents that arrive together share that transaction (group commit, see
:class:`IngestService`): a few statements and one commit for many Reports.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from sqlalchemy import BigInteger, bindparam, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError

from controller.agents import check_certificate
from controller.clock import Clock, utc_now
from controller.convert import fact_to_row, timestamp_is_valid
from controller.errors import CounterGuardError, InvalidInput, NotFound, Unauthenticated
from controller.models import AGENT, FACT
from protos.counterguard.v1 import facts_pb2

log = logging.getLogger(__name__)

# Sequences are stored in a signed 64-bit column; the wire type is uint64.
MAX_SEQUENCE = 2**63 - 1
_TIMESTAMP = "google.protobuf.Timestamp"


@dataclass(frozen=True)
class IngestLimits:
    """What one batch may hold; anything beyond is refused as invalid, never truncated."""

    max_facts_per_batch: int = 2000
    max_string_length: int = 4096  # characters of any string field, at any depth
    max_repeated: int = 100000  # elements of any repeated field, at any depth
    max_map_entries: int = 256  # entries of any map field, at any depth
    max_elements_per_batch: int = 200_000  # elements of all repeated and map fields of the batch together
    max_fact_bytes: int = 1024 * 1024  # one fact, serialized (fields this controller does not know included)


@dataclass(frozen=True)
class IngestResult:
    """The outcome of one committed batch."""

    acknowledged_sequence: int  # highest sequence now held for the agent
    stored: int  # facts of this batch that were new
    duplicates: int  # facts of this batch already held with the same content
    conflicts: tuple[int, ...] = ()  # sequences held with a DIFFERENT content: not stored, to renumber

# The largest outbox depth the agent's row holds (a signed 64-bit column); an agent's outbox is bounded far below.
MAX_OUTBOX_DEPTH = 2**63 - 1


class IngestService:
    """Validates and stores batches of facts; knows nothing of gRPC.

    Batches of different agents that arrive while a transaction is running are stored together in
    the next one (group commit): the thread whose batch finds no transaction running stores the
    queued batches of up to ``group_limit`` agents (one batch per agent, ``group_rows`` facts at most)
    in one transaction, then hands the queue to the oldest batch still waiting. An agent whose row
    another transaction holds (its evaluation, or another replica storing its batch), and every batch
    of a group whose transaction failed other than for an unreachable database, is stored in a
    transaction of its own by its own thread, so one agent never holds up the others and a fault is
    reported to the batch that caused it.

    ``group_limit`` None groups on PostgreSQL only. On SQLite every batch is stored alone: there one
    write lock serves the whole database, and a group's one waiter for it (backing off while the rules'
    evaluations hold it) stored fewer reports per second than each Report waiting for it itself
    (``bench/ingest.py``: 80 against 112 reports/s). A ``group_limit`` of 1 stores every batch alone.
    ``on_group`` is told the size of every group (the controller's metrics).
    """

    def __init__(self, engine: Engine, clock: Clock = utc_now, limits: IngestLimits = IngestLimits(),
                 group_limit: int | None = None, group_rows: int = 20_000,
                 on_group: Callable[[int], None] = lambda size: None) -> None:
        self._engine = engine
        self._on_group = on_group  # told the number of batches of each group stored
        self._clock = clock
        self._limits = limits
        if group_limit is None:
            group_limit = 64 if engine.dialect.name == "postgresql" else 1
        self._group_limit = group_limit
        self._group_rows = group_rows
        self._insert = _insert_ignoring_duplicates(engine.dialect.name)
        self._queue: deque[_Batch] = deque()
        self._queue_lock = threading.Lock()
        self._storing = False  # a thread is storing a group and will hand the queue on
        self._group_size = 0  # batches in the group being stored

    @property
    def queued(self) -> int:
        """Batches waiting for the transaction that will store them."""
        return len(self._queue)

    @property
    def storing(self) -> int:
        """Batches in the transaction being stored now (0: none)."""
        return self._group_size

    def ingest(self, agent_id: str, facts: Sequence[facts_pb2.Fact], presented: str | None = None,
               outbox_depth: int | None = None) -> IngestResult:
        """Store the new facts of ``facts`` for ``agent_id`` and return what is now held.

        Raises :class:`InvalidInput` (nothing stored) for a malformed or oversized batch,
        :class:`NotFound` for an unknown agent and :class:`Unauthenticated` for a revoked one, or (with
        ``presented``, a certificate fingerprint) for a certificate that is not the agent's.
        An empty batch stores nothing but still counts as contact (``last_seen_at``). ``outbox_depth``,
        when the agent reported it, is kept on its row with the contact.
        """
        validate_batch(facts, self._limits)
        if outbox_depth is not None and not 0 <= outbox_depth <= MAX_OUTBOX_DEPTH:
            raise InvalidInput(f"outbox_depth {outbox_depth} is out of range (0 to {MAX_OUTBOX_DEPTH})")
        received_at = self._clock()
        batch = _Batch(agent_id, [fact_to_row(agent_id, fact, received_at) for fact in facts], presented,
                       outbox_depth, received_at)
        if self._group_limit <= 1:
            return self._store_alone(batch)
        self._wait_for_group(batch)
        if batch.alone:
            return self._store_alone(batch)
        if batch.error is not None:
            raise batch.error
        assert batch.result is not None
        return batch.result

    def _wait_for_group(self, batch: _Batch) -> None:
        """Queue ``batch`` and return once a group stored it (or sent it to be stored alone); store the
        queued groups meanwhile whenever this thread holds the queue."""
        with self._queue_lock:
            self._queue.append(batch)
            storing = not self._storing
            self._storing = True
        while not batch.finished:
            if storing:
                storing = self._store_next_group(batch)
                continue
            batch.wake.wait()
            batch.wake.clear()
            storing = not batch.finished  # woken to store the next group

    def _store_next_group(self, own: _Batch) -> bool:
        """Store the group at the head of the queue and wake the batch that stores the next one; whether that is
        ``own``, the batch of this thread."""
        with self._queue_lock:
            group: list[_Batch] = []
            deferred: list[_Batch] = []  # a second batch of an agent in the group waits, in order, for the next
            agents: set[str] = set()
            rows = 0
            while self._queue and len(group) < self._group_limit:
                batch = self._queue.popleft()
                if batch.agent_id in agents:
                    deferred.append(batch)
                elif group and rows + len(batch.rows) > self._group_rows:
                    self._queue.appendleft(batch)
                    break
                else:
                    group.append(batch)
                    agents.add(batch.agent_id)
                    rows += len(batch.rows)
            self._queue.extendleft(reversed(deferred))
            self._group_size = len(group)
        following = None
        try:
            self._on_group(len(group))
            self._store_group(group)
        finally:  # whatever happened, no batch is left waiting and the queue goes on
            for batch in group:
                if not batch.finished:
                    batch.finish(alone=True)
            with self._queue_lock:
                self._group_size = 0
                following = self._queue[0] if self._queue else None
                if following is None:
                    self._storing = False
            if following is not None and following is not own:
                following.wake.set()
        return following is own

    def _store_group(self, group: list[_Batch]) -> None:
        """Store ``group`` in one transaction and finish each of its batches."""
        outcomes: list[tuple[_Batch, IngestResult | None, CounterGuardError | None]] = []
        try:
            with self._engine.begin() as conn:
                _begin_write(conn)
                locked = {row.id: row for row in conn.execute(self._lock_many, {"agents": [b.agent_id for b in group]})}
                new_rows: list[dict[str, Any]] = []
                contacts: list[dict[str, Any]] = []
                for batch in group:
                    row = locked.get(batch.agent_id)
                    if row is None:  # held by another transaction, or unknown: its own thread finds out which
                        outcomes.append((batch, None, None))
                        continue
                    try:
                        result, stored, contact = self._prepare(conn, batch, row)
                    except CounterGuardError as exc:
                        outcomes.append((batch, None, exc))
                        continue
                    outcomes.append((batch, result, None))
                    new_rows += stored
                    contacts.append(contact)
                if new_rows:
                    conn.execute(self._insert, new_rows)
                if contacts:
                    conn.execute(self._contact, contacts)
        except OperationalError as exc:  # the database cannot be used: every batch of the group hears so
            for batch in group:
                batch.finish(error=exc)
            return
        except Exception:  # noqa: BLE001 - each batch is tried alone, which reports the fault to its own caller
            log.warning("a group of %d batches could not be stored together; storing each alone", len(group),
                        exc_info=True)
            for batch in group:
                batch.finish(alone=True)
            return
        for batch, result, error in outcomes:
            batch.finish(result=result, error=error, alone=result is None and error is None)

    def _store_alone(self, batch: _Batch) -> IngestResult:
        """Store ``batch`` in a transaction of its own, waiting for its agent's row if another holds it."""
        with self._engine.begin() as conn:
            _begin_write(conn)
            row = conn.execute(self._lock_one, {"agent": batch.agent_id}).one_or_none()
            result, new_rows, contact = self._prepare(conn, batch, row)
            if new_rows:
                conn.execute(self._insert, new_rows)
            conn.execute(self._contact, contact)
        return result

    def _prepare(self, conn: Connection, batch: _Batch, row: Any) -> tuple[IngestResult, list[dict[str, Any]],
                                                                            dict[str, Any]]:
        """What storing ``batch`` under the lock of its agent's ``row`` writes: the outcome, the new fact rows and
        the agent's contact (parameters of ``_contact``). Raises for an agent that may not report."""
        if batch.presented is not None:
            check_certificate(batch.agent_id, batch.presented, row)
        if row is None:
            raise NotFound(f"no agent {batch.agent_id!r}")
        if row.revoked_at is not None:
            raise Unauthenticated(f"agent {batch.agent_id!r} was revoked")
        held, evaluated = int(row.last_sequence), int(row.evaluated_sequence)
        rows = batch.rows
        if rows and rows[0]["sequence"] > held:  # a live batch: nothing of it can be held yet
            new_rows, conflicts = rows, ()
        else:
            new_rows, conflicts = _without_held(conn, batch.agent_id, rows)
        acknowledged = max(held, max((r["sequence"] for r in new_rows), default=0))
        if new_rows and new_rows[0]["sequence"] <= evaluated:
            # Facts numbered below the evaluation mark arrived after later ones were judged (the agent's
            # batches reached two replicas out of order): move the mark back so they are judged too.
            evaluated = new_rows[0]["sequence"] - 1
        contact = {"agent": batch.agent_id, "seen": batch.received_at, "held": acknowledged, "evaluated": evaluated,
                   "depth": batch.outbox_depth}
        result = IngestResult(acknowledged, stored=len(new_rows),
                              duplicates=len(rows) - len(new_rows) - len(conflicts), conflicts=conflicts)
        return result, new_rows, contact

    # Built once: statements are the dearest part of a batch to build.
    _LOCKED_COLUMNS = (AGENT.c.id, AGENT.c.revoked_at, AGENT.c.revoked_reason, AGENT.c.cert_fingerprint,
                       AGENT.c.last_sequence, AGENT.c.evaluated_sequence)
    # On PostgreSQL ``FOR NO KEY UPDATE``: it excludes other ingests and evaluations of the agent but, unlike
    # ``FOR UPDATE``, not inserts elsewhere that reference the agent. On SQLite the transaction already holds
    # the database's write lock (see :func:`_begin_write`). A group skips the rows other transactions hold.
    _lock_one = select(*_LOCKED_COLUMNS).where(AGENT.c.id == bindparam("agent")).with_for_update(key_share=True)
    _lock_many = (select(*_LOCKED_COLUMNS).where(AGENT.c.id.in_(bindparam("agents", expanding=True)))
                  .with_for_update(key_share=True, skip_locked=True))
    # The agent's contact: last seen, highest sequence held, evaluation mark, and the outbox depth when it said.
    _contact = update(AGENT).where(AGENT.c.id == bindparam("agent")).values(
        last_seen_at=bindparam("seen", type_=AGENT.c.last_seen_at.type),
        last_sequence=bindparam("held", type_=BigInteger),
        evaluated_sequence=bindparam("evaluated", type_=BigInteger),
        outbox_depth=func.coalesce(bindparam("depth", type_=BigInteger), AGENT.c.outbox_depth),
    )


@dataclass(eq=False)
class _Batch:
    """One Report's batch on its way through the group commit."""

    agent_id: str
    rows: list[dict[str, Any]]
    presented: str | None
    outbox_depth: int | None
    received_at: dt.datetime
    wake: threading.Event = dataclasses.field(default_factory=threading.Event)
    finished: bool = False
    alone: bool = False  # to be stored in a transaction of its own, by the thread that brought it
    result: IngestResult | None = None
    error: BaseException | None = None

    def finish(self, result: IngestResult | None = None, error: BaseException | None = None,
               alone: bool = False) -> None:
        self.result, self.error, self.alone = result, error, alone
        self.finished = True
        self.wake.set()


def validate_batch(facts: Sequence[facts_pb2.Fact], limits: IngestLimits) -> None:
    """Raise :class:`InvalidInput` naming the first malformed fact of the batch, if any.

    Every limit is checked before the part it bounds is walked, so an oversized batch costs no more
    than the limits allow.
    """
    if len(facts) > limits.max_facts_per_batch:
        raise InvalidInput(f"batch has {len(facts)} facts; at most {limits.max_facts_per_batch} are accepted")
    budget = _Budget(limits.max_elements_per_batch)
    previous = 0
    for index, fact in enumerate(facts):
        kind = fact.WhichOneof("kind")
        problem = _fact_problem(fact, kind, previous, limits, budget)
        if problem:
            raise InvalidInput(f"fact {index} (sequence {fact.sequence}, {kind or 'no kind'}): {problem}")
        previous = fact.sequence


class _Budget:
    """What remains of the batch's allowance of repeated and map elements."""

    def __init__(self, elements: int) -> None:
        self.limit = self.left = elements

    def spend(self, count: int) -> bool:
        self.left -= count
        return self.left >= 0


def _fact_problem(
    fact: facts_pb2.Fact, kind: str | None, previous: int, limits: IngestLimits, budget: _Budget
) -> str | None:
    if kind is None:
        return "no kind is set"
    if fact.sequence == 0:
        return "sequence is 0; sequences start at 1"
    if fact.sequence > MAX_SEQUENCE:
        return f"sequence is above {MAX_SEQUENCE}"
    if fact.sequence <= previous:
        return f"sequence does not follow the previous fact's {previous}; sequences must strictly increase"
    if not fact.HasField("observed_at"):
        return "observed_at is missing"
    size = fact.ByteSize()
    if size > limits.max_fact_bytes:
        return f"the fact is {size} bytes serialized; at most {limits.max_fact_bytes} are accepted"
    found = _message_problem(fact, limits, budget)
    if found is None:
        return None
    path, problem = found
    return f"{path} {problem}"


def _message_problem(message: Message, limits: IngestLimits, budget: _Budget) -> tuple[str, str] | None:
    """The first oversized string, list or map or invalid timestamp anywhere inside ``message``: its path
    below ``message`` ("" for ``message`` itself) and what is wrong with it.

    Paths are spelled only for the part found wrong: an inventory's thousands of fine elements cost no names.
    """
    if message.DESCRIPTOR.full_name == _TIMESTAMP:
        return None if timestamp_is_valid(message) else ("", "is not a valid time")
    longest = limits.max_string_length
    for field, value in message.ListFields():
        name, kind = field.name, field.type
        if field.is_repeated:
            is_map = kind == _MESSAGE and field.message_type.GetOptions().map_entry
            problem = _size_problem(len(value), is_map, limits, budget)
            if problem:
                return name, problem
            if is_map:
                for key, item in value.items():
                    if isinstance(key, str) and len(key) > longest:
                        return f"{name} key", _too_long(key, longest)
                    found = _value_problem(item, limits, budget)
                    if found:
                        return _below(f"{name}[{key!r}]", found)
            elif kind == _MESSAGE:
                for index, item in enumerate(value):
                    found = _message_problem(item, limits, budget)
                    if found:
                        return _below(f"{name}[{index}]", found)
            elif kind in _TEXT:
                for index, item in enumerate(value):
                    if len(item) > longest:
                        return f"{name}[{index}]", _too_long(item, longest)
        elif kind == _MESSAGE:
            found = _message_problem(value, limits, budget)
            if found:
                return _below(name, found)
        elif kind in _TEXT and len(value) > longest:
            return name, _too_long(value, longest)
    return None


_MESSAGE = FieldDescriptor.TYPE_MESSAGE
_TEXT = (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES)


def _below(prefix: str, found: tuple[str, str]) -> tuple[str, str]:
    """``found`` (a path and a problem) as seen from the message holding ``prefix``."""
    path, problem = found
    return (f"{prefix}.{path}" if path else prefix), problem


def _size_problem(count: int, is_map: bool, limits: IngestLimits, budget: _Budget) -> str | None:
    """Why a repeated or map field of ``count`` elements is too large, if it is."""
    most, what = (limits.max_map_entries, "entries") if is_map else (limits.max_repeated, "elements")
    if count > most:
        return f"has {count} {what}; at most {most} are accepted"
    if not budget.spend(count):
        return f"takes the batch over {budget.limit} list and map elements in all"
    return None


def _value_problem(value: Any, limits: IngestLimits, budget: _Budget) -> tuple[str, str] | None:
    if isinstance(value, Message):
        return _message_problem(value, limits, budget)
    if isinstance(value, (str, bytes)) and len(value) > limits.max_string_length:
        return "", _too_long(value, limits.max_string_length)
    return None


def _too_long(value: str | bytes, most: int) -> str:
    unit = "characters" if isinstance(value, str) else "bytes"
    return f"is {len(value)} {unit} long; at most {most} are accepted"


def _insert_ignoring_duplicates(dialect: str) -> Any:
    """``INSERT … ON CONFLICT (agent_id, sequence) DO NOTHING`` for the engine's back end."""
    if dialect == "postgresql":
        return postgresql.insert(FACT).on_conflict_do_nothing(index_elements=["agent_id", "sequence"])
    if dialect == "sqlite":
        return sqlite.insert(FACT).on_conflict_do_nothing(index_elements=["agent_id", "sequence"])
    raise NotImplementedError(f"ingest supports SQLite and PostgreSQL, not {dialect}")


def _begin_write(conn: Connection) -> None:
    """On SQLite, take the database's write lock now rather than at the first write.

    pysqlite begins a transaction only at the first INSERT/UPDATE, so two writers could both read
    "not held yet" before either writes. ``BEGIN IMMEDIATE`` makes the read-then-write atomic.
    """
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _without_held(
    conn: Connection, agent_id: str, rows: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], tuple[int, ...]]:
    """The rows whose sequence the agent does not have stored yet, and the sequences held with another content.

    A fact sent again (its acknowledgement was lost) has the same serialized content and is a
    duplicate. A different fact under a held number means the agent's numbering went back (its
    outbox was restored from an older copy): that fact is new and must not be dropped as a duplicate,
    so it is reported back for the agent to renumber.
    """
    if not rows:
        return [], ()
    query = select(FACT.c.sequence, FACT.c.payload).where(
        FACT.c.agent_id == agent_id,
        FACT.c.sequence.between(rows[0]["sequence"], rows[-1]["sequence"]),
    )
    held = {int(sequence): bytes(payload) for sequence, payload in conn.execute(query)}
    new_rows = [row for row in rows if row["sequence"] not in held]
    conflicts = tuple(
        row["sequence"] for row in rows if row["sequence"] in held and held[row["sequence"]] != row["payload"]
    )
    return new_rows, conflicts
