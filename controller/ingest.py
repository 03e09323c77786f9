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
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message
from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from controller.agents import check_certificate
from controller.clock import Clock, utc_now
from controller.convert import fact_to_row, timestamp_is_valid
from controller.errors import InvalidInput, NotFound, Unauthenticated
from controller.models import AGENT, FACT
from protos.counterguard.v1 import facts_pb2

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
    """Validates and stores batches of facts; knows nothing of gRPC."""

    def __init__(self, engine: Engine, clock: Clock = utc_now, limits: IngestLimits = IngestLimits()) -> None:
        self._engine = engine
        self._clock = clock
        self._limits = limits
        self._insert = _insert_ignoring_duplicates(engine.dialect.name)

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
        rows = [fact_to_row(agent_id, fact, received_at) for fact in facts]
        with self._engine.begin() as conn:
            _begin_write(conn)
            held, evaluated = _lock_agent(conn, agent_id, presented)
            if rows and rows[0]["sequence"] > held:  # a live batch: nothing of it can be held yet
                new_rows, conflicts = rows, ()
            else:
                new_rows, conflicts = _without_held(conn, agent_id, rows)
            if new_rows:
                conn.execute(self._insert, new_rows)
            acknowledged = max(held, max((row["sequence"] for row in new_rows), default=0))
            contact: dict[str, Any] = {"last_seen_at": received_at, "last_sequence": acknowledged}
            if outbox_depth is not None:
                contact["outbox_depth"] = outbox_depth
            if new_rows and new_rows[0]["sequence"] <= evaluated:
                # Facts numbered below the evaluation mark arrived after later ones were judged (the agent's
                # batches reached two replicas out of order): move the mark back so they are judged too.
                contact["evaluated_sequence"] = new_rows[0]["sequence"] - 1
            conn.execute(update(AGENT).where(AGENT.c.id == agent_id).values(contact))
        return IngestResult(
            acknowledged,
            stored=len(new_rows),
            duplicates=len(rows) - len(new_rows) - len(conflicts),
            conflicts=conflicts,
        )


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
    return _message_problem(fact, "", limits, budget)


def _message_problem(message: Message, path: str, limits: IngestLimits, budget: _Budget) -> str | None:
    """The first oversized string, list or map or invalid timestamp anywhere inside ``message``."""
    if message.DESCRIPTOR.full_name == _TIMESTAMP:
        if not timestamp_is_valid(message):
            return f"{path or 'timestamp'} is not a valid time"
        return None
    for field, value in message.ListFields():
        name = f"{path}.{field.name}" if path else field.name
        if field.is_repeated:
            is_map = field.message_type is not None and field.message_type.GetOptions().map_entry
            problem = _size_problem(name, len(value), is_map, limits, budget)
            if problem:
                return problem
            if is_map:
                items: list[tuple[str, Any]] = []
                for key, item in value.items():
                    items += [(f"{name} key", key), (f"{name}[{key!r}]", item)]
            else:
                items = [(f"{name}[{i}]", item) for i, item in enumerate(value)]
        else:
            items = [(name, value)]
        for item_path, item in items:
            problem = _value_problem(item, item_path, limits, budget)
            if problem:
                return problem
    return None


def _size_problem(name: str, count: int, is_map: bool, limits: IngestLimits, budget: _Budget) -> str | None:
    """Why a repeated or map field of ``count`` elements is too large, if it is."""
    most, what = (limits.max_map_entries, "entries") if is_map else (limits.max_repeated, "elements")
    if count > most:
        return f"{name} has {count} {what}; at most {most} are accepted"
    if not budget.spend(count):
        return f"{name} takes the batch over {budget.limit} list and map elements in all"
    return None


def _value_problem(value: Any, path: str, limits: IngestLimits, budget: _Budget) -> str | None:
    if isinstance(value, Message):
        return _message_problem(value, path, limits, budget)
    if isinstance(value, (str, bytes)) and len(value) > limits.max_string_length:
        unit = "characters" if isinstance(value, str) else "bytes"
        return f"{path} is {len(value)} {unit} long; at most {limits.max_string_length} are accepted"
    return None


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


def _lock_agent(conn: Connection, agent_id: str, presented: str | None) -> tuple[int, int]:
    """Lock the agent's row until commit, so one batch of an agent is stored at a time; the highest
    sequence it holds and the highest its evaluations marked (``evaluated_sequence``). With
    ``presented``, also check the certificate (see :func:`check_certificate`).

    On PostgreSQL ``FOR NO KEY UPDATE``: it excludes other ingests of this agent but, unlike
    ``FOR UPDATE``, not inserts elsewhere that reference the agent. On SQLite the transaction
    already holds the database's write lock (see :func:`_begin_write`).
    """
    row = conn.execute(
        select(AGENT.c.revoked_at, AGENT.c.revoked_reason, AGENT.c.cert_fingerprint, AGENT.c.last_sequence,
               AGENT.c.evaluated_sequence)
        .where(AGENT.c.id == agent_id).with_for_update(key_share=True)
    ).one_or_none()
    if presented is not None:
        check_certificate(agent_id, presented, row)
    if row is None:
        raise NotFound(f"no agent {agent_id!r}")
    if row.revoked_at is not None:
        raise Unauthenticated(f"agent {agent_id!r} was revoked")
    return int(row.last_sequence), int(row.evaluated_sequence)


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
