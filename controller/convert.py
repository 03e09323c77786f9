"""The one place that converts between protobuf messages and database rows.

A fact is stored as the serialized ``facts_pb2.Fact`` it arrived as, beside the columns we query
by (agent, sequence, kind, times). Timestamps cross the boundary as timezone-aware UTC
``datetime`` values; enum values become short lower-case labels for people and JSON.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from google.protobuf.descriptor import EnumDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.timestamp_pb2 import Timestamp

from controller.errors import InvalidInput
from protos.counterguard.v1 import facts_pb2

# The range google.protobuf.Timestamp allows: 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59.999999999Z.
MIN_TIMESTAMP_SECONDS = -62_135_596_800
MAX_TIMESTAMP_SECONDS = 253_402_300_799
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def fact_kind(fact: facts_pb2.Fact) -> str:
    """The name of the ``kind`` oneof field that is set, e.g. ``"process_started"``."""
    kind = fact.WhichOneof("kind")
    if kind is None:
        raise InvalidInput(f"fact with sequence {fact.sequence} has no kind set")
    return kind


def fact_to_row(agent_id: str, fact: facts_pb2.Fact, received_at: dt.datetime) -> dict[str, Any]:
    """The values of one ``fact`` table row, ready for a Core ``insert`` (the fact must be valid)."""
    return {
        "agent_id": agent_id,
        "sequence": fact.sequence,
        "kind": fact_kind(fact),
        "observed_at": timestamp_to_datetime(fact.observed_at),
        "received_at": received_at,
        "payload": fact.SerializeToString(deterministic=True),
    }


def row_to_fact(payload: bytes) -> facts_pb2.Fact:
    """The fact a row's ``payload`` holds."""
    try:
        return facts_pb2.Fact.FromString(payload)
    except DecodeError as exc:
        raise InvalidInput(f"stored fact payload cannot be decoded: {exc}") from None


def timestamp_is_valid(ts: Timestamp) -> bool:
    """Whether ``ts`` lies in the range a protobuf Timestamp (and a Python datetime) can hold."""
    return MIN_TIMESTAMP_SECONDS <= ts.seconds <= MAX_TIMESTAMP_SECONDS and 0 <= ts.nanos <= 999_999_999


def timestamp_to_datetime(ts: Timestamp) -> dt.datetime:
    """A timezone-aware UTC datetime (microsecond precision; the nanoseconds below are dropped)."""
    if not timestamp_is_valid(ts):
        raise InvalidInput(f"timestamp seconds={ts.seconds} nanos={ts.nanos} is out of range")
    return _EPOCH + dt.timedelta(seconds=ts.seconds, microseconds=ts.nanos // 1000)


def datetime_to_timestamp(value: dt.datetime) -> Timestamp:
    """The protobuf Timestamp of an aware datetime (naive ones are refused: we never guess a zone)."""
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: CounterGuard uses timezone-aware UTC only")
    delta = value - _EPOCH
    seconds, micros = divmod(delta.days * 86_400_000_000 + delta.seconds * 1_000_000 + delta.microseconds, 1_000_000)
    return Timestamp(seconds=seconds, nanos=micros * 1000)


def optional_datetime(message: Message, field: str) -> dt.datetime | None:
    """The datetime of a Timestamp field of ``message``, or ``None`` when the field is unset."""
    if not message.HasField(field):
        return None
    return timestamp_to_datetime(getattr(message, field))


def message_values(message: Message, *, nested: bool = True) -> dict[str, Any]:
    """A message's fields (set or not) as plain values for people and JSON.

    Enums become labels, Timestamps aware datetimes (``None`` when unset), repeated fields
    lists; nested messages become dicts, or are left out with ``nested=False``.
    """
    values: dict[str, Any] = {}
    for field in message.DESCRIPTOR.fields:
        value = getattr(message, field.name)
        message_type = field.message_type
        if message_type is not None and message_type.GetOptions().map_entry:
            if nested:
                values[field.name] = {k: message_values(v) if isinstance(v, Message) else v for k, v in value.items()}
        elif message_type is not None and message_type.full_name == Timestamp.DESCRIPTOR.full_name:
            if field.is_repeated:
                values[field.name] = [timestamp_to_datetime(v) for v in value]
            else:
                values[field.name] = optional_datetime(message, field.name)
        elif message_type is not None:
            if nested:
                values[field.name] = [message_values(v) for v in value] if field.is_repeated else message_values(value)
        elif field.enum_type is not None:
            enum = field.enum_type
            values[field.name] = [enum_label(enum, v) for v in value] if field.is_repeated else enum_label(enum, value)
        else:
            values[field.name] = list(value) if field.is_repeated else value
    return values


def enum_label(enum: EnumDescriptor, value: int) -> str:
    """A short label for an enum value: ``DEVICE_CLASS_SMART_CARD`` → ``"smart card"``.

    The enum's own prefix (its name in upper snake case) and a ``KIND_`` prefix are dropped;
    values this code does not know yet come out as their number.
    """
    known = enum.values_by_number.get(value)
    if known is None:
        return str(value)
    name = known.name
    prefix = "".join(f"_{c}" if c.isupper() else c.upper() for c in enum.name).lstrip("_") + "_"
    for candidate in (prefix, "KIND_"):
        if name.startswith(candidate):
            name = name[len(candidate) :]
            break
    return name.lower().replace("_", " ")


def software_source_label(value: int) -> str:
    """``SOFTWARE_SOURCE_DPKG`` → ``"dpkg"``, ``SOFTWARE_SOURCE_DESKTOP_ENTRY`` → ``"desktop-entry"``."""
    return enum_label(facts_pb2.SoftwareSource.DESCRIPTOR, value).replace(" ", "-")


def device_class_label(value: int) -> str:
    """``DEVICE_CLASS_STORAGE`` → ``"storage"``."""
    return enum_label(facts_pb2.DeviceClass.DESCRIPTOR, value)
